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
    ``optional`` keys may be left out.
    """

    kind: str
    doc: str
    optional: bool = False
    choices: tuple[str, ...] | None = None

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
                               "and `x`, `xprev` (what the next layer receives now and one glimpse back)."),
            "on_glimpse_end": Entry("code", _LATCH, optional=True),
        }),
        "spiking": Table("Spiking neuron, simulated with the time step [engine] dt_ms; the builder provides "
                         "the constants `glimpse` and `steps_per_glimpse`.", {
            "nonlinearity": Entry("choice", "The rate neuron this spiking neuron approximates.",
                                  choices=NONLINEARITIES, optional=True),
        }),
        "spiking.constants": Table("Constants put in the namespace of every group.", {
            "<name>": Entry("quantity", "A constant the equations use by this name, e.g. `tau_m = \"10 ms\"`.",
                            optional=True),
        }),
        "spiking.input": Table("The input neurons: one per pixel (sample, frame pixel) of a glimpse.", {
            "equations": Entry("equations", "Must define `x = stimulus(t, i)` (the glimpse, a TimedArray) and "
                               "`x_rate`, the spike rate that codes x = 1."),
            "threshold": Entry("condition", "When an input neuron spikes, e.g. `rand() < x_rate * x * dt`."),
        }),
        "spiking.layer": Table("The neurons of every layer.", {
            "equations": Entry("equations", "Must define the spike count `nz`, its rate readout `z`, the "
                               "surrogate derivative `psi`, dendrite `d`, `dnew`, retrodiction `r`, context "
                               "`zprev` and `x_rate`."),
            "threshold": Entry("condition", "When a layer neuron spikes."),
            "reset": Entry("code", "Run at every spike (e.g. count it: `nz += 1`)."),
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
                       "and the shared learning rate `eta`."),
        "modulator": Entry("equations", "The layer's modulator neuron (one per layer): `u`, `y`, `M`."),
        "score": Entry("code", "Layer -> modulator, at the glimpse end before any learning: accumulate "
                       "`u = sum_j z_j d_j`.") if spiking else
        Entry("equations", "Layer -> modulator: the score `u = sum_j z_j d_j`, a summed variable."),
    }
    if spiking:
        modulation["modulator_on_glimpse_end"] = Entry("code", "Run by the modulator at the end of every "
                                                       "glimpse (reset the accumulated score).", optional=True)
    feedforward = {"model": Entry("equations", "The synapse: the weight `w` and " + (
        "its eligibility traces." if spiking else "the soma `a_post` it sums."))}
    if spiking:
        feedforward["on_spike"] = Entry("code", "Run at every presynaptic spike: drive the soma, accumulate the "
                                        "eligibility.")
    feedforward["on_glimpse_end"] = Entry("code", "The learning step at the end of every glimpse: "
                                          "`w += eta M (Hebbian term)`.")
    transpose = (Entry("code", "Run by the prediction synapses at the glimpse end, before learning: "
                       "`r_pre += w * z_post`.") if spiking else
                 Entry("equations", "Added to the prediction synapses' model: `r_pre = w * z_post`, summed."))
    retro = {"model": Entry("equations", "The synapse: `w`" + ("." if spiking else
                                                              " and the retrodiction `r_post` it sums."))}
    if spiking:
        retro["score"] = Entry("code", "Sum the retrodiction `r` at the glimpse end, before learning.")
    retro["on_glimpse_end"] = Entry("code", "The learning step, `w += eta M zprev_post z_pre`.")
    return {
        f"{variant}.modulation": Table(f"The layer's score u and modulation factor M ({variant} variant).",
                                       modulation),
        f"{variant}.feedforward": Table(f"W: input (or previous layer) -> layer ({variant} variant).", feedforward),
        f"{variant}.prediction": Table(f"W_pred: layer (context) -> layer (dendrite) ({variant} variant).", {
            "model": Entry("equations", "The synapse: `w`" + ("." if spiking else " and the dendrite `d_post` it sums.")),
            "on_glimpse_end": Entry("code", "The learning step, `w += eta M z_post zprev_pre`" + (
                ", then sum the next glimpse's dendrite." if spiking else ".")),
        }),
        f"{variant}.retrodiction_transpose": Table(
            f"CLAPP-s: r = W_pred^T z, through the prediction synapses ({variant} variant).",
            {"prediction_score" if spiking else "prediction_model": transpose}),
        f"{variant}.retrodiction": Table(f"CLAPP: a separate matrix W_retro, layer -> layer ({variant} variant).",
                                         retro),
    }


FORMAT["synapses"].update(_synapse_tables("rate"))
FORMAT["synapses"].update(_synapse_tables("spiking"))
_KINDS = tuple(FORMAT)




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
