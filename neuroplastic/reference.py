"""The protocol and model-file references, generated from the declarations in the code.

:data:`neuroplastic.protocol.SCHEMA` declares every protocol table and key, and
:data:`neuroplastic.models.FORMAT` every table and key of a model file. The
functions here turn them into reStructuredText pages, so the documentation can
never drift from what validation accepts. The documentation build calls
:func:`write_references`; ``tests/test_docs.py`` checks the pages against the
declarations.

Examples
--------
>>> from neuroplastic.reference import protocol_reference
>>> text = protocol_reference()
>>> "``lr``" in text and "Learning rate" in text
True
"""
from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["model_reference", "protocol_reference", "write_references"]

#: How each kind of protocol key is named in the reference (unknown kinds are shown as they are).
KIND_NAMES = {"str": "string", "int": "integer", "float": "float", "bool": "boolean", "path": "path",
              "int_list": "list of integers", "layer_list": '"all" or list of integers'}


def _rst(text: str) -> str:
    """Plain text as reStructuredText: `code` spans become literals, markup characters are escaped."""
    out = []
    for k, part in enumerate(re.split(r"`([^`]+)`", text)):
        if k % 2:
            out.append(f"``{part}``")
        else:
            out.append(re.sub(r"([\\*|_])", r"\\\1", part))
    return "".join(out)


def _toml(value) -> str:
    """A default value as it is written in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def _heading(title: str, char: str) -> list[str]:
    return [title, char * len(title), ""]


def _page(title: str, label: str, source: str) -> list[str]:
    """A generated page's first lines: the do-not-edit comment naming its ``source``, its label and title."""
    return [f".. This page is generated from {source} by neuroplastic.reference; do not edit it.", "",
            f".. _{label}:", "", *_heading(title, "=")]


def _table(rows: list[list[str]], header: list[str], widths: str) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return lines + [""]


def protocol_reference() -> str:
    """The protocol reference page: every table and key of :data:`~neuroplastic.protocol.SCHEMA`.

    Returns
    -------
    str
        reStructuredText with one section per table (``[table]``; the top level first) and one row
        per key: name, type, default, allowed values and doc.
    """
    from .protocol import ENGINE_KEYS, READERS, SCHEMA

    lines = _page("Protocol reference", "protocol-reference", "neuroplastic.protocol.SCHEMA")
    lines += ["A protocol is a TOML file with the top-level keys below and one table per section. Every key "
              "may be left out except those marked *required*; ``neuroplastic validate FILE`` checks a file, and "
              "``--set table.key=value`` overrides a key on the command line. A key that only some rules or "
              "engines read (*read by*) is refused when the protocol's rule and engine do not read it. This page "
              "is generated from :data:`neuroplastic.protocol.SCHEMA`, the declaration validation uses.", ""]
    for table, keys in SCHEMA.items():
        lines += [f".. _protocol-{table or 'top-level'}:", ""]
        lines += _heading("Top level" if not table else f"[{table}]", "-")
        rows = []
        for name, key in keys.items():
            dotted = f"{table}.{name}"
            # a key that engines read with values of their own (``[engine] device``) gets a row per engine
            own = [(f"engine {e}", keys_[dotted]) for e, keys_ in ENGINE_KEYS.items() if dotted in keys_]
            variants = own if len({spec for _, spec in own}) > 1 else [(None, key)]
            for reader, spec in variants:
                default = "*required*" if spec.required else f"``{_toml(spec.default)}``"
                readers = [reader] if reader else READERS.get(dotted)
                rows.append([f"``{name}``", KIND_NAMES.get(spec.kind, spec.kind), default, _rst(spec.allowed()),
                             _rst(", ".join(readers)) if readers else "every protocol", _rst(spec.doc)])
        lines += _table(rows, ["key", "type", "default", "allowed values", "read by", "description"],
                        "12 8 10 18 16 36")
    return "\n".join(lines)


def model_reference() -> str:
    """The model-file reference page: every table and key of :data:`~neuroplastic.models.FORMAT`.

    Returns
    -------
    str
        reStructuredText with one section per kind of file (neuron, synapses), one subsection per
        table and one row per key: name, what its value is, whether it is required, and doc.
    """
    from .models import FORMAT

    lines = _page("Model-file reference", "model-reference", "neuroplastic.models.FORMAT")
    lines += ["A model file is a TOML file of Brian2 equations and code (``models/`` holds the shipped ones). "
              "Its top-level ``kind`` says what it defines. The engines read only the tables of the variant "
              "they simulate (``[engine] variant``), so a file may define one variant. This page is generated "
              "from :data:`neuroplastic.models.FORMAT`.", ""]
    for kind, tables in FORMAT.items():
        lines += [f".. _model-{kind}:", ""]
        lines += _heading(f'{"Neuron" if kind == "neuron" else "Synapse"} files (kind = "{kind}")', "-")
        for table, spec in tables.items():
            lines += _heading("Top level" if not table else f"[{table}]", "~")
            lines += [_rst(spec.doc), ""]
            rows = [[f"``{name}``", _rst(entry.allowed()), "optional" if entry.optional else "required",
                     _rst(entry.doc)] for name, entry in spec.keys.items()]
            lines += _table(rows, ["key", "value", "", "description"], "18 28 10 44")
    return "\n".join(lines)


def write_references(directory: str | Path) -> list[Path]:
    """Write ``protocol.rst`` and ``model_files.rst`` into ``directory`` (a file is rewritten only if it changed).

    Returns
    -------
    list of Path
        The two files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("protocol.rst", protocol_reference()), ("model_files.rst", model_reference())):
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    return paths
