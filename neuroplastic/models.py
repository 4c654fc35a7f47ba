"""Model files (``models/*.toml``): neuron and synapse definitions as text a scientist edits.

A neuron file (``kind = "neuron"``) has one table per variant (``[rate]``,
``[spiking]``) with the neuron's ``equations`` in Brian2 syntax (a unit on every
line) and what happens at the end of each glimpse. A synapse file
(``kind = "synapses"``) has, per variant, one table per pathway (``model`` and
``on_glimpse_end`` code). The engines read these files; no equation is hidden in
Python.

Errors are :class:`ModelError` naming the file, the line and the key.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelError", "ModelFile", "load_model", "NONLINEARITIES"]

#: Somatic nonlinearities the numpy engine implements.
NONLINEARITIES = ("relu",)
_KINDS = ("neuron", "synapses")


class ModelError(ValueError):
    """A model file that cannot be used, with the file, line and key in the message."""


@dataclass(frozen=True)
class ModelFile:
    """A parsed model file: its tables, and where each string value starts in the file."""

    path: Path
    kind: str
    description: str
    data: dict[str, Any] = field(repr=False)
    lines: dict[str, int] = field(repr=False)

    def variant(self, name: str) -> dict[str, Any]:
        """The table of variant ``name`` (``"rate"`` or ``"spiking"``)."""
        if name not in self.data:
            have = [k for k, v in self.data.items() if isinstance(v, dict)]
            raise ModelError(f"{self.path}: has no [{name}] variant (it defines: {', '.join(have) or 'none'})")
        return self.data[name]

    def get(self, dotted: str) -> str:
        """The string at ``table.key`` (e.g. ``"rate.feedforward.model"``), or a ModelError naming it."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ModelError(f"{self.path}: key {dotted!r} is missing")
            node = node[part]
        if not isinstance(node, str):
            raise ModelError(f"{self.where(dotted)}: {dotted} must be a string, got {node!r}")
        return node

    def where(self, dotted: str, offset: int = 0) -> str:
        """``file:line`` of the value at ``dotted`` (plus ``offset`` lines into a multi-line string)."""
        line = self.lines.get(dotted)
        return f"{self.path}:{line + offset}" if line else str(self.path)

    def check_equations(self, dotted: str) -> str:
        """Parse the Brian2 equations at ``dotted`` line by line; a bad line is named by its file line."""
        from brian2 import Equations

        text = self.get(dotted)
        for k, line in enumerate(text.split("\n")):
            code = line.split("#", 1)[0].strip()
            if not code:
                continue
            try:
                Equations(code)
            except Exception as err:  # Brian raises several types (EquationError, SyntaxError, ...)
                raise ModelError(f"{self.where(dotted, k)}: [{dotted.rsplit('.', 1)[0]}] "
                                 f"{dotted.rsplit('.', 1)[1]}: cannot parse {code!r}: {_first_line(err)}") from None
        return text

    def equation_lines(self):
        """Every code line of every string value: ``(table.key, line offset, code without comment)``."""
        for dotted in self.lines:
            for k, line in enumerate(self.get(dotted).split("\n")):
                code = line.split("#", 1)[0].strip()
                if code:
                    yield dotted, k, code


def _first_line(err: Exception) -> str:
    lines = [l for l in str(err).strip().split("\n") if l.strip()]
    return lines[0] if lines else type(err).__name__


def _string_lines(text: str) -> dict[str, int]:
    """Line number where each ``key = <string>`` value's content starts, by dotted ``table.key``."""
    out, table = {}, ""
    for n, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if m := re.match(r"^\[([A-Za-z0-9_.\-]+)\]\s*(#.*)?$", stripped):
            table = m.group(1)
        elif m := re.match(r"^([A-Za-z0-9_\-]+)\s*=\s*('''|\"\"\"|'|\")(.*)$", stripped):
            key = f"{table}.{m.group(1)}" if table else m.group(1)
            triple, rest = m.group(2) in ("'''", '"""'), m.group(3)
            out[key] = n + 1 if triple and rest.strip() == "" else n   # content starts after ''' + newline
    return out


def load_model(path: str | Path, kind: str | None = None) -> ModelFile:
    """Read a model file and check its kind (and, for neurons, the rate nonlinearity)."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except OSError as err:
        raise ModelError(f"{path}: cannot read model file: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ModelError(f"{path}: not valid TOML: {err}") from None
    found = data.get("kind")
    if found not in _KINDS:
        raise ModelError(f"{path}: kind = {found!r}: must be one of {', '.join(map(repr, _KINDS))}")
    if kind is not None and found != kind:
        raise ModelError(f"{path}: kind = {found!r}, but a {kind} model file is needed here")
    model = ModelFile(path, found, str(data.get("description", "")), data, _string_lines(text))
    if found == "neuron" and "rate" in data:
        nl = data["rate"].get("nonlinearity")
        if nl not in NONLINEARITIES:
            raise ModelError(f"{model.where('rate.nonlinearity')}: [rate] nonlinearity = {nl!r}: "
                             f"must be one of {', '.join(map(repr, NONLINEARITIES))}")
    return model
