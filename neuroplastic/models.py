"""Model files (``models/*.toml``): neuron and synapse definitions as text a scientist edits.

A neuron file (``kind = "neuron"``) has one table per variant (``[rate]``,
``[spiking]``) with the neuron's ``equations`` in Brian2 syntax (a unit on every
line) and what happens at the end of each glimpse. A synapse file
(``kind = "synapses"``) has, per variant, one table per pathway (``model`` and
``on_glimpse_end`` code). The engines read these files; no equation is hidden in
Python.

Every table and key a model file may have is declared in :data:`FORMAT`, from
which the model-file reference of the documentation is generated. Errors are
:class:`ModelError` naming the file, the line and the key.

Examples
--------
>>> from neuroplastic.models import load_model
>>> from neuroplastic.protocol import MODELS_DIR
>>> neuron = load_model(MODELS_DIR / "two_compartment.toml", kind="neuron")
>>> neuron.kind, sorted(neuron.variant("rate"))
('neuron', ['equations', 'nonlinearity', 'on_glimpse_end'])
>>> neuron.where("rate.equations")[-len("two_compartment.toml:13"):]
'two_compartment.toml:13'
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError

__all__ = ["FORMAT", "Entry", "ModelError", "ModelFile", "Table", "load_model", "NONLINEARITIES"]

#: Somatic nonlinearities the numpy engine implements.
NONLINEARITIES = ("relu",)


@dataclass(frozen=True)
class Entry:
    """One key of a model file: the kind of text its value holds, and what it is for.

    ``kind`` is ``"text"`` (free text), ``"choice"`` (one of ``choices``),
    ``"equations"`` (Brian2 equations, one per line, a unit on each),
    ``"code"`` (Brian2 statements run on an event), ``"condition"`` (a Brian2
    boolean expression) or ``"quantity"`` (a number and a Brian2 unit, ``"5 ms"``).
    ``optional`` keys may be left out. ``defines`` names the variables equations must define
    because an engine reads them (a ``_post``/``_pre`` one must be a summed variable).
    """

    kind: str
    doc: str
    optional: bool = False
    choices: tuple[str, ...] | None = None
    defines: tuple[str, ...] = ()

    def allowed(self) -> str:
        """Describe the allowed values in words (used in the reference)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return {"text": "a string", "equations": "Brian2 equations (a string, one per line, each with its unit)",
                "code": "Brian2 statements (a string, one per line)",
                "condition": "a Brian2 boolean expression (a string)",
                "quantity": 'a number and a Brian2 unit (a string, e.g. "5 ms")'}[self.kind]


@dataclass(frozen=True)
class Table:
    """One table of a model file: what it describes and its keys (``"<name>"``: any name)."""

    doc: str
    keys: dict[str, Entry]


_TOP = {"kind": Entry("choice", "What the file defines.", choices=("neuron", "synapses")),
        "description": Entry("text", "One line shown by `neuroplastic list`.", optional=True)}
_LATCH = "Run at the end of every glimpse, after the synapses have learned (e.g. latch the context `zprev = z`)."

#: Every table and key of a model file, by ``kind``: ``FORMAT[kind][table][key]``. A neuron file
#: needs the variant tables (``rate``, ``spiking``) of the engines that use it, not both.
FORMAT: dict[str, dict[str, Table]] = {
    "neuron": {
        "": Table("Top level of a neuron file.", _TOP),
        "rate": Table("Rate neuron: one time step per glimpse (Brian2 rate variant; the numpy engine implements "
                      "the same neuron).", {
            "nonlinearity": Entry("choice", "Somatic nonlinearity rho, which the numpy engine implements.",
                                  choices=NONLINEARITIES),
            "equations": Entry("equations", "The neuron: it must define the soma `a`, rate `z`, `rho_prime`, "
                               "dendrite `d`, retrodiction `r`, context `zprev`, `aprev`, `rho_prime_prev`, "
                               "and `x`, `xprev` (what the next layer receives now and one glimpse back).",
                               defines=("a", "z", "rho_prime", "d", "r", "zprev", "aprev", "rho_prime_prev", "x",
                                        "xprev")),
            "on_glimpse_end": Entry("code", _LATCH, optional=True),
        }),
        "spiking": Table("Spiking neuron, simulated with the time step [engine] dt_ms; the builder provides "
                         "the constants `glimpse`, `steps_per_glimpse`, `settle_steps` (the constant `settle` "
                         "times `steps_per_glimpse`, rounded down) and `window` (the glimpse less its settle "
                         "window).", {
            "nonlinearity": Entry("choice", "The rate neuron this spiking neuron approximates.",
                                  choices=NONLINEARITIES, optional=True),
        }),
        "spiking.constants": Table("Constants put in the namespace of every group.", {
            "<name>": Entry("quantity", "A constant the equations use by this name, e.g. `tau_m = \"10 ms\"`.",
                            optional=True),
        }),
        "spiking.input": Table("The input neurons: one per pixel (sample, frame pixel) of a glimpse.", {
            "equations": Entry("equations", "Must define `x = stimulus(t, i)` (the glimpse, a TimedArray) and "
                               "`x_rate`, the spike rate that codes x = 1.", defines=("x", "x_rate")),
            "threshold": Entry("condition", "When an input neuron spikes, e.g. `rand() < x_rate * x * dt`."),
        }),
        "spiking.layer": Table("The neurons of every layer.", {
            "equations": Entry("equations", "Must define the soma potential `v` and the dendritic potential `d` "
                               "(both recorded), the spike count `nz` (the probe's readout), the rate readout `z` "
                               "that the score and the plasticity read, its derivative `psi`, the dendrite "
                               "averaged over the counted window `dbar`, the window flag `counting`, retrodiction "
                               "`r`, context `zprev` and `x_rate`.",
                               "The builder adds `last_spike_step` (written at every spike; the spike recordings "
                               "read it).",
                               defines=("v", "d", "nz", "z", "psi", "dbar", "counting", "r", "zprev", "x_rate")),
            "threshold": Entry("condition", "When a layer neuron spikes."),
            "reset": Entry("code", "Run at every spike (e.g. count it: `nz += counting`)."),
            "on_step": Entry("code", "Run every time step, after the state update (e.g. a running mean: "
                             "`dbar += counting * d * dt / window`).", optional=True),
            "on_settled": Entry("code", "Run when a glimpse's settle window ends, `settle_steps` steps after the "
                                "saccade (e.g. start counting: `counting = 1`).", optional=True),
            "on_glimpse_end": Entry("code", _LATCH, optional=True),
        }),
    },
    "synapses": {
        "": Table("Top level of a synapse file.", _TOP),
    },
}


def _synapse_tables(variant: str) -> dict[str, Table]:
    """The tables of one variant of a synapse file (the rate and spiking builders read different keys)."""
    spiking = variant == "spiking"
    modulation = {
        "layer": Entry("equations", "Added to each layer's neurons: the linked score `u`, `M = y Theta(1 - y u)` "
                       "and the shared learning rate `eta`.", defines=("u", "M", "eta")),
        "modulator": Entry("equations", "The layer's modulator neuron (one per layer): `u`, `y`, `M`.",
                           defines=("u", "y", "M")),
        "score": Entry("code", "Layer -> modulator, at the glimpse end before any learning: accumulate "
                       "`u = sum_j z_j d_j`.") if spiking else
        Entry("equations", "Layer -> modulator: the score `u = sum_j z_j d_j`, a summed variable.",
              defines=("u_post",)),
    }
    if spiking:
        modulation["modulator_on_glimpse_end"] = Entry("code", "Run by the modulator at the end of every "
                                                       "glimpse (reset the accumulated score).", optional=True)
    feedforward = {"model": Entry("equations", "The synapse: the weight `w` and " + (
        "its eligibility traces." if spiking else "the soma `a_post` it sums."),
        defines=("w",) if spiking else ("w", "a_post"))}
    if spiking:
        feedforward["on_spike"] = Entry("code", "Run at every presynaptic spike: drive the soma, accumulate the "
                                        "eligibility.")
    feedforward["on_glimpse_end"] = Entry("code", "The learning step at the end of every glimpse: "
                                          "`w += eta (M (prediction term) + M_retro (retrodiction term))`.")
    transpose = (Entry("code", "Run by the prediction synapses at the glimpse end, before learning: "
                       "`r_pre += w * z_post`.") if spiking else
                 Entry("equations", "Added to the prediction synapses' model: `r_pre = w * z_post`, summed.",
                       defines=("r_pre",)))
    transpose_gate = Entry("equations", "Added to each layer's neurons: the gate of the retrodiction term, "
                           "`M_retro = M` (one score, one gate).", defines=("M_retro",))
    retro = {"model": Entry("equations", "The synapse: `w`" + ("." if spiking else
                                                              " and the retrodiction `r_post` it sums."),
                            defines=("w",) if spiking else ("w", "r_post"))}
    if spiking:
        retro["score"] = Entry("code", "Sum the retrodiction `r` at the glimpse end, before learning.")
    retro["on_glimpse_end"] = Entry("code", "The learning step, `w += eta M_retro zprev_post z_pre`.")
    retro_modulation = {
        "layer": Entry("equations", "Added to each layer's neurons: the linked retrodiction score `u_retro` and "
                       "its gate `M_retro = y Theta(1 - y u_retro)`.", defines=("u_retro", "M_retro")),
        "modulator": Entry("equations", "Added to the layer's modulator neuron: `u_retro`, `M_retro`.",
                           defines=("u_retro", "M_retro")),
    }
    if spiking:
        retro_modulation["modulator_on_glimpse_end"] = Entry("code", "Run by the modulator at the end of every "
                                                             "glimpse (reset the accumulated retrodiction score).",
                                                             optional=True)
    retro_modulation["score"] = (
        Entry("code", "Layer -> modulator, at the glimpse end once `r` is summed, before any learning: accumulate "
              "`u_retro = sum_i zprev_i r_i`.") if spiking else
        Entry("equations", "Layer -> modulator: the retrodiction score `u_retro = sum_i zprev_i r_i`, a summed "
              "variable.", defines=("u_retro_post",)))
    return {
        f"{variant}.modulation": Table(f"The layer's score u and modulation factor M ({variant} variant).",
                                       modulation),
        f"{variant}.feedforward": Table(f"W: input (or previous layer) -> layer ({variant} variant).", feedforward),
        f"{variant}.prediction": Table(f"W_pred: layer (context) -> layer (dendrite) ({variant} variant).", {
            "model": Entry("equations", "The synapse: `w`" + ("." if spiking else
                                                              " and the dendrite `d_post` it sums."),
                           defines=("w",) if spiking else ("w", "d_post")),
            **({"on_spike": Entry("code", "Run at every spike of the context neuron (pre), delivered one glimpse "
                                  "later (a synaptic delay of one glimpse): drive the dendrite, "
                                  "`d_post += w / (x_rate_pre * tau_d)`.")} if spiking else {}),
            "on_glimpse_end": Entry("code", "The learning step, `w += eta M z_post zprev_pre`."),
        }),
        f"{variant}.retrodiction_transpose": Table(
            f"CLAPP-s: r = W_pred^T z, through the prediction synapses, gated by M ({variant} variant).",
            {"prediction_score" if spiking else "prediction_model": transpose, "layer": transpose_gate}),
        f"{variant}.retrodiction": Table(f"CLAPP: a separate matrix W_retro, layer -> layer ({variant} variant).",
                                         retro),
        f"{variant}.retrodiction_modulation": Table(
            f"CLAPP: the retrodiction pathway's own score u_retro = sum_i zprev_i r_i and gate "
            f"M_retro = y Theta(1 - y u_retro), computed and broadcast like u and M ({variant} variant).",
            retro_modulation),
    }


FORMAT["synapses"].update(_synapse_tables("rate"))
FORMAT["synapses"].update(_synapse_tables("spiking"))
_KINDS = tuple(FORMAT)


@dataclass(frozen=True)
class ModelFile:
    """A parsed model file: its tables, and where each string value starts in the file.

    ``lines`` maps every string value (``table.key``) to the line where its text starts;
    ``positions`` maps every key and table, whatever its value, to its line.
    """

    path: Path
    kind: str
    description: str
    data: dict[str, Any] = field(repr=False)
    lines: dict[str, int] = field(repr=False)
    positions: dict[str, int] = field(default_factory=dict, repr=False)

    def variant(self, name: str) -> dict[str, Any]:
        """The table of variant ``name`` (``"rate"`` or ``"spiking"``), with every key :data:`FORMAT` requires."""
        if name not in self.data or not isinstance(self.data[name], dict):
            have = [k for k, v in self.data.items() if isinstance(v, dict)]
            needs = [f"[{t}]" for t in _variant_tables(self.kind, name) if _required(self.kind, t)]
            raise ModelError(f"{self.path}: has no [{name}] variant (it defines: {', '.join(have) or 'none'})" + (
                             f"; a {self.kind} file of the {name} variant needs {', '.join(needs)}" if needs else ""))
        for table in _variant_tables(self.kind, name):
            required = _required(self.kind, table)
            if not required:
                continue
            node = self._node(table)
            if node is None:
                raise ModelError(f"{self.path}: [{table}] is missing: {FORMAT[self.kind][table].doc} It needs "
                                 f"the key{'s' if len(required) > 1 else ''} {', '.join(required)} (see the "
                                 "model-file reference)")
            for key in required:
                if key not in node:
                    entry = FORMAT[self.kind][table].keys[key]
                    raise ModelError(f"{self.where(table)}: [{table}] {key} is missing: {entry.allowed()}. "
                                     f"{entry.doc}")
        return self.data[name]

    def _node(self, dotted: str) -> dict | None:
        node: Any = self.data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else None

    def get(self, dotted: str) -> str:
        """The string at ``table.key`` (e.g. ``"rate.feedforward.model"``), or a ModelError naming it."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ModelError(f"{self.path}: key {dotted!r} is missing")
            node = node[part]
        if not isinstance(node, str):
            raise ModelError(f"{self.where(dotted)}: {_label(dotted)} = {_show(node)}: must be a string")
        return node

    def where(self, dotted: str, offset: int = 0) -> str:
        """``file:line`` of the value at ``dotted`` (plus ``offset`` lines into a multi-line string)."""
        line = self.lines.get(dotted) or self.positions.get(dotted)
        return f"{self.path}:{line + offset}" if line else str(self.path)

    def check_equations(self, dotted: str) -> str:
        """Parse the Brian2 equations at ``dotted`` line by line; a bad line is named by its file line."""
        from brian2 import Equations

        text = self.get(dotted)
        for k, code in _code_lines(text):
            try:
                Equations(code)
            except Exception as err:  # Brian raises several types (EquationError, SyntaxError, ...)
                raise ModelError(f"{self.where(dotted, k)}: {_label(dotted)}: cannot parse {code!r}: "
                                 f"{_first_line(err)}") from None
        try:
            equations = Equations(text)
        except Exception as err:    # each line parses: a problem of the whole, e.g. a variable defined twice
            raise ModelError(f"{self.where(dotted)}: {_label(dotted)}: {_first_line(err)}") from None
        entry = _entry(self.kind, dotted)
        if entry is not None:
            missing = [v for v in entry.defines if v not in equations]
            if missing:
                raise ModelError(f"{self.where(dotted)}: {_label(dotted)} must define "
                                 f"{', '.join(repr(v) for v in missing)} (an engine reads "
                                 f"{'it' if len(missing) == 1 else 'them'}): {entry.doc}")
            for v in entry.defines:
                if v.endswith(("_post", "_pre")) and "summed" not in equations[v].flags:
                    raise ModelError(f"{self.where(dotted)}: {_label(dotted)}: {v!r} must be a summed "
                                     f"variable, e.g. '{v} = ... : 1 (summed)'")
        return text

    def check_code(self, dotted: str) -> str:
        """Parse the Brian2 statements at ``dotted`` (``var = expr``, ``var += expr``, ...) line by line."""
        import ast

        from brian2.parsing.statements import parse_statement

        text = self.get(dotted)
        for k, code in _code_lines(text):
            try:
                ast.parse(parse_statement(code)[2], mode="eval")
            except (ValueError, SyntaxError):
                raise ModelError(f"{self.where(dotted, k)}: {_label(dotted)}: cannot parse {code!r}: write one "
                                 "Brian2 statement per line, 'variable = expression' (or +=, -=, *=, /=)") from None
        return text

    def check_condition(self, dotted: str) -> str:
        """Parse the Brian2 boolean expression at ``dotted``."""
        import ast

        text = self.get(dotted)
        try:
            ast.parse(" ".join(line.split("#", 1)[0] for line in text.split("\n")).strip(), mode="eval")
        except SyntaxError as err:
            raise ModelError(f"{self.where(dotted)}: {_label(dotted)} = {text!r}: cannot parse it as a Brian2 "
                             f"boolean expression: {err.msg}") from None
        return text

    def check_quantity(self, dotted: str):
        """The Brian2 quantity at ``dotted`` (``"5 ms"`` -> 5 * ms)."""
        import brian2.units as units

        text = self.get(dotted)
        m = _QUANTITY.match(text)
        unit = getattr(units, m.group(2), None) if m and m.group(2) else 1
        if m is None or unit is None or not isinstance(unit, (int, units.Unit)):
            raise ModelError(f"{self.where(dotted)}: {_label(dotted)} = {text!r}: write a number and a Brian2 "
                             "unit, e.g. \"5 ms\"")
        try:
            return float(m.group(1)) * unit
        except ValueError:
            raise ModelError(f"{self.where(dotted)}: {_label(dotted)} = {text!r}: {m.group(1)!r} is not a "
                             "number; write a number and a Brian2 unit, e.g. \"5 ms\"") from None

    def check_brian(self, variant: str) -> None:
        """Parse every value of ``variant`` with Brian2: equations (and the variables they must define), code,
        conditions and quantities. Whether the names resolve and the units agree shows only when Brian2 builds
        the network (the engine's ``check`` does that for one neuron per group)."""
        self.variant(variant)
        for table in _variant_tables(self.kind, variant):
            node = self._node(table)
            for key, value in (node or {}).items():
                entry = FORMAT[self.kind][table].keys.get(key) or FORMAT[self.kind][table].keys.get("<name>")
                if entry is None or isinstance(value, dict):
                    continue
                check = {"equations": self.check_equations, "code": self.check_code,
                         "condition": self.check_condition, "quantity": self.check_quantity}.get(entry.kind)
                if check is not None:
                    check(f"{table}.{key}")

    def equation_lines(self):
        """Every code line of every string value: ``(table.key, line offset, code without comment)``."""
        for dotted in self.lines:
            value = self.get(dotted)
            for k, line in enumerate(value.split("\n")):
                code = line.split("#", 1)[0].strip()
                if code:
                    yield dotted, k, code


_QUANTITY = re.compile(r"^\s*([-+0-9.eE]+)\s*([A-Za-z]*)\s*$")


def _variant_tables(kind: str, variant: str) -> list[str]:
    """The tables of ``variant`` in a ``kind`` file, in :data:`FORMAT` order."""
    return [t for t in FORMAT[kind] if t == variant or t.startswith(variant + ".")]


def _required(kind: str, table: str) -> list[str]:
    return [k for k, e in FORMAT[kind][table].keys.items() if not e.optional and k != "<name>"]


def _entry(kind: str, dotted: str) -> Entry | None:
    table, _, key = dotted.rpartition(".")
    spec = FORMAT.get(kind, {}).get(table)
    return None if spec is None else spec.keys.get(key) or spec.keys.get("<name>")


def _label(dotted: str) -> str:
    """``[rate] equations`` for ``rate.equations``; a top-level key as itself."""
    table, _, key = dotted.rpartition(".")
    return f"[{table}] {key}" if table else key


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict) else "a table"
    return text if len(text) <= 60 else text[:57] + "..."


def _code_lines(text: str) -> list[tuple[int, str]]:
    """``(line offset, code)`` of each line of a Brian2 string that holds code (comments and blanks left out)."""
    return [(k, code) for k, line in enumerate(text.split("\n")) if (code := line.split("#", 1)[0].strip())]


def _first_line(err: Exception) -> str:
    lines = [l for l in str(err).strip().split("\n") if l.strip()]
    return lines[0] if lines else type(err).__name__


_TABLE = re.compile(r"^\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^([A-Za-z0-9_\-]+)\s*=\s*(.*)$")


def _positions(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """Line numbers by dotted ``table.key``: where each string value's content starts, and where every key
    and table header is. The content of multi-line strings is skipped (it may look like a key)."""
    strings, every, table, closing = {}, {}, "", None
    for n, line in enumerate(text.split("\n"), start=1):
        if closing is not None:                     # inside a multi-line string
            if closing in line:
                closing = None
            continue
        stripped = line.strip()
        if m := _TABLE.match(stripped):
            table = m.group(1)
            every.setdefault(table, n)
        elif m := _KEY.match(stripped):
            key = f"{table}.{m.group(1)}" if table else m.group(1)
            every.setdefault(key, n)
            value = m.group(2)
            for quote in ("'''", '"""', "'", '"'):
                if value.startswith(quote):
                    triple, rest = len(quote) == 3, value[len(quote):]
                    strings[key] = n + 1 if triple and rest.strip() == "" else n   # content after ''' + newline
                    if triple and quote not in rest:
                        closing = quote
                    break
    return strings, every


def _check_format(model: ModelFile) -> None:
    """Every key and table of the file is declared in :data:`FORMAT` and has a value of the declared type."""
    tables = FORMAT[model.kind]

    def children(table: str) -> set[str]:
        prefix = f"{table}." if table else ""
        return {t[len(prefix):].split(".")[0] for t in tables if t and t != table and t.startswith(prefix)}

    def walk(node: dict, table: str) -> None:
        spec, subtables = tables.get(table), children(table)
        for key, value in node.items():
            dotted = f"{table}.{key}" if table else key
            if key in subtables:
                if not isinstance(value, dict):
                    inside = _required(model.kind, dotted) or sorted(children(dotted))
                    raise ModelError(f"{model.where(dotted)}: {_label(dotted)} = {_show(value)}: must be a table, "
                                     f"[{dotted}]" + (f" (with {', '.join(inside)})" if inside else ""))
                walk(value, dotted)
                continue
            entry = None if spec is None else spec.keys.get(key) or spec.keys.get("<name>")
            if entry is None:
                allowed = ([k for k in spec.keys if k != "<name>"] if spec else []) + \
                          [f"[{table + '.' if table else ''}{c}]" for c in sorted(subtables)]
                near = difflib.get_close_matches(key, [a.strip("[]").rsplit(".", 1)[-1] for a in allowed], n=1)
                what = "table" if isinstance(value, dict) else "key"
                name = f"[{dotted}]" if isinstance(value, dict) else _label(dotted)
                raise ModelError(f"{model.where(dotted)}: {name}: unknown {what} in a {model.kind} file"
                                 + (f"; did you mean {near[0]!r}?" if near else "")
                                 + f" (allowed{' in [' + table + ']' if table else ''}: "
                                 f"{', '.join(allowed) or 'none'})")
            if not isinstance(value, str):
                raise ModelError(f"{model.where(dotted)}: {_label(dotted)} = {_show(value)}: must be "
                                 f"{entry.allowed()}")
            if entry.choices is not None and value not in entry.choices:
                raise ModelError(f"{model.where(dotted)}: {_label(dotted)} = {value!r}: must be {entry.allowed()}")

    walk(model.data, "")


def load_model(path: str | Path, kind: str | None = None) -> ModelFile:
    """Read a model file and check it against :data:`FORMAT`: its kind, and every key and table it has.

    Required keys are checked by :meth:`ModelFile.variant`, as a file needs only the variants its
    engines read; the Brian2 code by :meth:`ModelFile.check_brian`.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ModelError(f"{path}: cannot read model file: it is a directory") from None
    except OSError as err:
        raise ModelError(f"{path}: cannot read model file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ModelError(f"{path}:{line}: not UTF-8 text (byte {raw[err.start]:#04x}); a model file is TOML, "
                         "which must be saved as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"at line (\d+)", str(err))
        raise ModelError(f"{path}{':' + m.group(1) if m else ''}: not valid TOML: {err}") from None
    strings, every = _positions(text)
    found = data.get("kind")
    where = f"{path}:{every['kind']}" if "kind" in every else str(path)
    if "kind" not in data:
        raise ModelError(f"{path}: kind is missing: a model file starts with kind = "
                         f"{' or '.join(map(repr, _KINDS))}")
    if found not in _KINDS:
        raise ModelError(f"{where}: kind = {_show(found)}: must be one of {', '.join(map(repr, _KINDS))}")
    if kind is not None and found != kind:
        raise ModelError(f"{where}: kind = {found!r}, but a {kind} model file is needed here")
    model = ModelFile(path, found, str(data.get("description", "")), data, strings, every)
    _check_format(model)
    return model
