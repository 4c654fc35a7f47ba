"""Load and validate protocol files (TOML) into typed, immutable objects.

A protocol is data: which data set, which stimulus schedule, which model, which
rule, which engine, how long to train and how to evaluate. :data:`SCHEMA` is the
one place where every table and key is declared, with its type, default,
allowed values and a one-line doc; validation and the protocol reference are
both made from it.

Every error is a :class:`ProtocolError` naming the file, the ``table.key`` and
what is allowed, e.g.::

    protocols/x.toml: [rule] lr = -1: must be a number > 0

Examples
--------
>>> from neuroplastic.protocol import loads
>>> p = loads('name = "demo"\\n[rule]\\nname = "clapp_s"\\nlr = 1e-3')
>>> p.rule.name, p.rule.lr, p.train.epochs
('clapp_s', 0.001, 10)
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ProtocolError

__all__ = ["SCHEMA", "Key", "Protocol", "ProtocolError", "load", "loads", "parse_override"]

#: Directory that holds ``models/`` and ``protocols/`` (the project checkout).
ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
PROTOCOLS_DIR = ROOT / "protocols"

_REQUIRED = object()




def _did_you_mean(word: str, names) -> str | None:
    """The known name closest to ``word`` (similar spelling, or one is a prefix of the other), if any."""
    names = list(names)
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return close[0]
    prefixed = [n for n in names if min(len(n), len(word)) >= 2 and (word.startswith(n) or n.startswith(word))]
    return max(prefixed, key=len) if prefixed else None     # 'lr_rate' -> 'lr'


def _choices_from(module: str, attr: str) -> Callable[[], list[str]]:
    """Allowed names read lazily from a registry, so the schema never drifts from the code."""

    def names():
        import importlib

        return sorted(getattr(importlib.import_module(module), attr))

    return names


@dataclass(frozen=True)
class Key:
    """One protocol key: its type, default, allowed values and doc.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``int_list``,
    ``layer_list`` (list of ints or ``"all"``) or ``path``.
    """

    kind: str
    default: Any = _REQUIRED
    doc: str = ""
    choices: tuple | Callable[[], list[str]] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def allowed(self) -> str:
        """Describe the allowed values in words (used in errors and in the reference)."""
        if self.choices is not None:
            names = self.choices() if callable(self.choices) else self.choices
            return "one of " + ", ".join(repr(n) for n in names)
        noun = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                "path": "a file path (string)", "int_list": "a list of integers",
                "layer_list": '"all" or a list of layer numbers (1 = first layer)'}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        each = " each" if self.kind in ("int_list", "layer_list") else ""
        return noun + (f"{each} " + " and ".join(bounds) if bounds else "")

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to this key's type, or raise ``ValueError(reason)``."""
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be {self.allowed()}")
            return value
        if kind in ("str", "path"):
            if not isinstance(value, str):
                raise ValueError(f"must be {self.allowed()}")
            if self.choices is not None and value not in (names := self._names()):
                close = _did_you_mean(value, names)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise ValueError(f"must be {self.allowed()}{hint}")
            return value
        if kind in ("int", "float"):
            return self._number(value)
        if kind == "layer_list" and value == "all":
            return "all"
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be {self.allowed()} (a non-empty list)")
        return [self._number(v, kind="int") for v in value]

    def _names(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices)

    def _number(self, value: Any, kind: str | None = None) -> int | float:
        kind = kind or self.kind
        ok = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (kind == "float" and not math.isfinite(value)):
            raise ValueError(f"must be {self.allowed()}")
        lo_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        hi_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if lo_bad or hi_bad:
            raise ValueError(f"must be {self.allowed()}")
        return float(value) if kind == "float" else int(value)


_DATA = _choices_from("neuroplastic.data", "DATASETS")
_ENGINES = _choices_from("neuroplastic.engines", "ENGINES")
_RULES = _choices_from("neuroplastic.rules", "RULES")


def _architectures() -> list[str]:
    from .rate.conv_network import ARCHITECTURES

    return ["dense", *ARCHITECTURES]

#: Every table and key a protocol may have. ``""`` is the top level.
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "name": Key("str", doc="Name of the protocol; names its run directories."),
        "description": Key("str", "", "Free text shown by `neuroplastic list`."),
        "seed": Key("int", 0, "Seed of every random draw (weights, batches, saccades, probe split).", low=0),
    },
    "data": {
        "source": Key("str", "digits", "Data set (built-in or loaded from `path`).", choices=_DATA),
        "path": Key("path", "", "Directory of a data set on disk (real-data loaders), relative to the protocol "
                    "file or absolute; empty for built-in data."),
        "split": Key("str", "", "Which split of the data set to load (allowed values depend on the source; "
                     "empty = its default, see `neuroplastic list`)."),
        "label": Key("str", "", "Which labelling the probe decodes, e.g. 'token' or 'speaker' for speech "
                     "(allowed values depend on the source; empty = its default)."),
        "max_samples": Key("int", 0, "Use at most this many samples (0 = all).", low=0),
        "test_fraction": Key("float", 0.5, "Fraction held out for the linear probe's test set.",
                             low=0, high=1, low_open=True, high_open=True),
    },
    "stimulus": {
        "kind": Key("str", "glimpses", "How samples become glimpse sequences: patches of an image on a grid, "
                    "windows of a sound, blocks of frames of a clip (by the data's domain); 'views': two "
                    "augmented views of each whole image (hinge rules).", choices=("glimpses", "views")),
        "patch": Key("int", 4, "Glimpse size: side in pixels (images), samples (sound) or frames (video).", low=1),
        "stride": Key("int", 2, "Step between neighbouring glimpses, in the same unit as `patch`.", low=1),
        "scan": Key("str", "raster", "Order in which the eye visits an image's glimpse grid.",
                    choices=("raster", "snake")),
        "saccade_prob": Key("float", 0.5, "CLAPP: probability that a step is a saccade (y = -1) "
                            "rather than a fixation (y = +1).", low=0, high=1),
        "glimpse_ms": Key("float", 50.0, "Duration of one glimpse in simulated time (Brian2 engine), in ms.",
                          low=0, low_open=True),
        "crop_pad": Key("int", 1, "Views: shift each view by up to this many pixels (pad with 0, crop back).", low=0),
        "flip": Key("bool", False, "Views: mirror views left-right at random (off for digits: a mirrored digit "
                    "is another symbol)."),
        "jitter": Key("float", 0.4, "Views: scale brightness and contrast by factors from [1 - jitter, 1 + jitter].",
                      low=0, high=1),
        "blur": Key("float", 0.0, "Views: Gaussian blur with a standard deviation from [0, blur] pixels.", low=0),
        "crop": Key("int", 0, "Conv CLAPP: crop each image to crop x crop pixels before cutting its patch grid, at "
                    "a random place per training batch and at the centre for the probe (paper: 64; 0 = whole "
                    "image).", low=0),
    },
    "model": {
        "file": Key("path", "two_compartment", "Neuron model file: a path (relative to the protocol "
                    "file) or the name of a file in models/."),
        "synapses": Key("path", "clapp_synapses", "Synapse model file (Brian2 engine): a path or a name in models/."),
        "arch": Key("str", "dense", "Encoder: 'dense' layers of `layers` two-compartment units on flattened "
                    "glimpses, or a named convolutional CLAPP encoder on patch grids ('vgg6': the paper's; "
                    "'small': for built-in data), see neuroplastic.rate.conv_network.", choices=_architectures),
        "layers": Key("int_list", [64, 64], "Number of neurons of each layer, input side first (arch = 'dense').",
                      low=1),
        "init_scale": Key("float", 1.0, "Feed-forward weights start as N(0, init_scale^2 * 2 / fan_in).",
                          low=0, low_open=True),
        "pred_init_scale": Key("float", 0.1, "Prediction (and retrodiction) weights start as "
                               "N(0, pred_init_scale^2 / n).", low=0),
        "activation": Key("str", "relu", "Non-linearity of the hinge rules' dense layers (the authors use "
                          "hardtanh); CLAPP's rate neuron is relu.", choices=("relu", "hardtanh", "tanh")),
    },
    "rule": {
        "name": Key("str", "clapp_s", "Plasticity rule.", choices=_RULES),
        "lr": Key("float", 1e-3, "Learning rate eta.", low=0, low_open=True),
        "negatives": Key("int", 1, "Negative pairs per positive pair. CLAPP-s: saccades; hinge rules: the next "
                         "k images of the batch (>= batch_size - 1: every other image).", low=1),
        "optimizer": Key("str", "adam", "How updates are applied.", choices=("adam", "sgd")),
        "offsets": Key("int_list", [1], "Conv CLAPP: a patch predicts the patches these many rows below it, "
                       "one W_pred each (paper: [2, 3, 4, 5, 6]).", low=1),
        "score": Key("str", "location", "Conv CLAPP: score, hinge and modulation per location of the map "
                     "(the paper's text) or of each patch's spatial mean (the authors' code).",
                     choices=("location", "patch")),
        "tau": Key("float", 2.0, "Hinge rules: L1 distance that separates positive from negative pairs.",
                   low=0, low_open=True),
        "delta": Key("float", 1.0, "Hinge rules: margin; positives are pulled below tau - delta, negatives "
                     "pushed above tau + delta.", low=0),
        "head": Key("int", 64, "Hinge rules: size of the linear head(s) whose outputs the loss compares.", low=1),
        "target_step": Key("float", 0.05, "DTP: top target h_L - target_step * d(loss of the image)/dh_L.",
                           low=0, low_open=True),
        "inverse_noise": Key("float", 0.1, "DTP: standard deviation of the noise the inverses learn to undo.",
                             low=0, low_open=True),
        "inverse_lr": Key("float", 1e-3, "DTP: learning rate of the inverses.", low=0, low_open=True),
    },
    "engine": {
        "name": Key("str", "numpy", "Simulation engine.", choices=_ENGINES),
        "variant": Key("str", "rate", "Neuron variant (Brian2 engine).", choices=("rate", "spiking")),
        "device": Key("str", "cpp", "Brian2 device: 'runtime' (numpy code generation, no compiler), 'cpp' "
                      "(compiled once with cpp_standalone, then re-run) or 'cuda' (brian2cuda, nvcc).",
                      choices=("runtime", "cpp", "cuda")),
        "cuda_arch": Key("float", 9.0, "CUDA compute capability the 'cuda' device compiles for.", low=5.0),
        "dt_ms": Key("float", 0.1, "Simulation time step (Brian2 engine), in ms.", low=0, low_open=True),
        "dtype": Key("str", "float32", "Floating-point type of the numpy engine.", choices=("float32", "float64")),
    },
    "train": {
        "epochs": Key("int", 10, "Passes over the training images.", low=1),
        "batch_size": Key("int", 64, "Images per update (numpy engine); >= 2, as a saccade goes to another image of the batch.", low=2),
        "checkpoint_every": Key("int", 1, "Write a resumable checkpoint every this many epochs.", low=1),
    },
    "evaluate": {
        "probe": Key("str", "linear", "Read-out trained on frozen features.", choices=("linear",)),
        "layers": Key("layer_list", "all", "Layers to probe.", low=1),
        "pooling": Key("str", "mean", "How a sample's glimpse features become one vector: 'mean' over "
                       "glimpses (as in the paper) or 'concat' (beware: flatters random encoders).",
                       choices=("mean", "concat")),
        "baseline": Key("bool", True, "Also probe a random-weight encoder of the same architecture."),
        "C": Key("float", 1.0, "Inverse L2 strength of the logistic-regression probe.", low=0, low_open=True),
        "source": Key("str", "", "Probe on another data set than the one trained on (e.g. train on cifar100, "
                      "probe cifar10); empty = [data] source."),
        "path": Key("path", "", "Directory of the probe's data set; empty = [data] path."),
        "split": Key("str", "", "Probe on this split instead of a held-out part of the training data (e.g. train "
                     "on STL-10 'unlabeled', probe 'train'); empty = hold out [data] test_fraction."),
        "test_split": Key("str", "", "Test the probe on this split (e.g. 'test'); empty = hold out "
                          "[data] test_fraction of [evaluate] split."),
    },
}


class Section:
    """One validated table of a protocol; keys are attributes (``p.rule.lr``)."""

    def __init__(self, table: str, values: dict[str, Any]):
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"protocol table [{self._table}] has no key {key!r}") from None

    def __setattr__(self, key, value):
        raise AttributeError("protocols are immutable; use Protocol.with_overrides()")

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Section({self._table!r}, {self._values!r})"


@dataclass(frozen=True)
class Protocol:
    """A validated protocol: top-level keys plus one :class:`Section` per table."""

    name: str
    description: str
    seed: int
    sections: dict[str, Section] = field(repr=False)
    source: str = "<string>"
    model_path: Path | None = None
    synapses_path: Path | None = None

    def __getattr__(self, table: str) -> Section:
        sections = object.__getattribute__(self, "sections")
        if table in sections:
            return sections[table]
        raise AttributeError(table)

    def as_dict(self) -> dict[str, Any]:
        """The fully resolved protocol (every default filled in), as TOML-ready data."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "seed": self.seed}
        out.update({t: s.as_dict() for t, s in self.sections.items()})
        return out

    def digest(self) -> str:
        """Hash of the resolved protocol: the identity of a run."""
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, overrides: list[str]) -> "Protocol":
        """Return a new protocol with ``table.key=value`` overrides applied and validated."""
        raw = self.as_dict()
        for item in overrides:
            table, key, value = parse_override(item)
            if table:
                raw.setdefault(table, {})[key] = value
            else:
                raw[key] = value
        return _validate(raw, self.source, base_dir=_base_dir(self.source))


def parse_override(item: str) -> tuple[str, str, Any]:
    """Split ``'rule.lr=1e-3'`` into ``('rule', 'lr', 0.001)``; the value is read as TOML, else as a string."""
    if "=" not in item:
        raise ProtocolError("--set", "", f"{item!r} must have the form table.key=value (e.g. rule.lr=1e-3)")
    path, text = (s.strip() for s in item.split("=", 1))
    table, _, key = path.rpartition(".")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    _check_names({table: {key: value}} if table else {key: value}, "--set")
    return table, key, value


def load(path: str | Path, overrides: list[str] | None = None) -> Protocol:
    """Read and validate a protocol file; ``overrides`` are ``table.key=value`` strings."""
    path = Path(path)
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        hint = f" (files there: {', '.join(near)})" if near else ""
        raise ProtocolError(str(path), "", f"no such protocol file{hint}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(str(path), "", f"not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ProtocolError(str(path), "", "not a text file (TOML must be UTF-8)") from None
    protocol = _validate(raw, str(path), base_dir=path.parent)
    return protocol.with_overrides(overrides) if overrides else protocol


def loads(text: str, source: str = "<string>") -> Protocol:
    """Validate a protocol given as TOML text (relative model paths resolve against the working directory)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(source, "", f"not valid TOML: {err}") from None
    return _validate(raw, source, base_dir=Path.cwd())


def _base_dir(source: str) -> Path:
    p = Path(source)
    return p.parent if p.is_file() else Path.cwd()


def _check_names(raw: dict[str, Any], source: str) -> None:
    """Reject unknown tables and keys, with a 'did you mean' suggestion."""
    known_top = set(SCHEMA[""]) | (set(SCHEMA) - {""})
    for name, value in raw.items():
        if name not in known_top:
            close = _did_you_mean(name, sorted(known_top))
            hint = f"; did you mean {close!r}?" if close else ""
            raise ProtocolError(source, "", f"unknown key or table {name!r}{hint} "
                                f"(allowed: {', '.join(sorted(known_top))})")
        if name in SCHEMA and name != "":
            if not isinstance(value, dict):
                raise ProtocolError(source, "", f"{name!r} must be a table ([{name}]), got {value!r}")
            for key in value:
                if key not in SCHEMA[name]:
                    close = _did_you_mean(key, SCHEMA[name])
                    hint = f"; did you mean {close!r}?" if close else ""
                    raise ProtocolError(source, f"{name}.{key}", f"unknown key{hint} "
                                        f"(allowed in [{name}]: {', '.join(SCHEMA[name])})")


def _validate(raw: dict[str, Any], source: str, base_dir: Path) -> Protocol:
    _check_names(raw, source)
    resolved: dict[str, dict[str, Any]] = {}
    for table, keys in SCHEMA.items():
        given = raw if table == "" else raw.get(table, {})
        values = {}
        for key, spec in keys.items():
            dotted = f"{table}.{key}" if table else key
            if key not in given:
                if spec.required:
                    raise ProtocolError(source, dotted, f"missing; it is required ({spec.doc})")
                values[key] = spec.default
                continue
            try:
                values[key] = spec.check(given[key])
            except ValueError as err:
                raise ProtocolError(source, dotted, f"= {_show(given[key])}: {err}") from None
        resolved[table] = values
    top = resolved.pop("")
    _check_layers(resolved, source)
    model_path = resolve_model(resolved["model"]["file"], base_dir, source)
    synapses_path = resolve_model(resolved["model"]["synapses"], base_dir, source, key="model.synapses")
    _check_data(resolved["data"], base_dir, source)
    _check_probe_data(resolved["evaluate"], resolved["data"], base_dir, source)
    sections = {t: Section(t, v) for t, v in resolved.items()}
    return Protocol(top["name"], top["description"], top["seed"], sections, source, model_path, synapses_path)


def _check_layers(resolved: dict[str, dict[str, Any]], source: str) -> None:
    """Cross-check: every probed layer must exist in the model."""
    model = resolved["model"]
    if model["arch"] == "dense":
        n, given = len(model["layers"]), f"[model] layers = {_show(model['layers'])}"
    else:
        from .rate.conv_network import parse_architecture

        n, given = len(parse_architecture(model["arch"])), f"[model] arch = {_show(model['arch'])}"
    chosen = resolved["evaluate"]["layers"]
    if chosen != "all" and (too_big := [l for l in chosen if l > n]):
        raise ProtocolError(source, "evaluate.layers", f"= {_show(chosen)}: layer {too_big[0]} does not exist; "
                            f"the model has {n} layer{'s' if n != 1 else ''} ({given}), so layers are "
                            f"numbered 1 to {n}")


def resolve_model(name: str, base_dir: Path, source: str, key: str = "model.file") -> Path:
    """Find a model file: a path relative to the protocol's directory, or a name in models/."""
    candidates = [base_dir / name, MODELS_DIR / name, MODELS_DIR / f"{name}.toml"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = sorted(p.stem for p in MODELS_DIR.glob("*.toml"))
    raise ProtocolError(source, key, f"= {name!r}: no such model file (looked in "
                        f"{base_dir} and {MODELS_DIR}; models there: {', '.join(known) or 'none'})")


def _check_data(data: dict[str, Any], base_dir: Path, source: str) -> None:
    """Cross-check ``[data]``: split and label the source has, a path that exists (made absolute)."""
    from .data import DATASETS

    src = DATASETS[data["source"]]
    for key, allowed in (("split", src.splits), ("label", src.labels)):
        if data[key] and data[key] not in allowed:
            raise ProtocolError(source, f"data.{key}", f"= {data[key]!r}: not a {key} of {data['source']}; "
                                f"allowed: {', '.join(map(repr, allowed))}")
    data["path"] = _absolute_path(data["path"], base_dir, source, "data.path")


def _check_probe_data(ev: dict[str, Any], data: dict[str, Any], base_dir: Path, source: str) -> None:
    """Cross-check the probe's own data (``[evaluate] source, path, split, test_split``), if any."""
    from .data import DATASETS

    if ev["source"] and ev["source"] not in DATASETS:
        close = _did_you_mean(ev["source"], DATASETS)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ProtocolError(source, "evaluate.source", f"= {ev['source']!r}: no such data source{hint}; allowed: "
                            f"'' (the training data) or one of {', '.join(map(repr, sorted(DATASETS)))}")
    src_name = ev["source"] or data["source"]
    for key in ("split", "test_split"):
        if ev[key] and ev[key] not in DATASETS[src_name].splits:
            raise ProtocolError(source, f"evaluate.{key}", f"= {ev[key]!r}: not a split of {src_name}; allowed: "
                                f"'' or {', '.join(map(repr, DATASETS[src_name].splits))}")
    if ev["test_split"] and not ev["split"]:
        raise ProtocolError(source, "evaluate.test_split", f"= {ev['test_split']!r}: set [evaluate] split too "
                            "(the split the probe is trained on)")
    ev["path"] = _absolute_path(ev["path"], base_dir, source, "evaluate.path")


def _absolute_path(path: str, base_dir: Path, source: str, key: str) -> str:
    """``path`` (relative to the protocol file) made absolute; it must exist. Empty stays empty."""
    if not path:
        return path
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base_dir / p
    if not p.exists():
        raise ProtocolError(source, key, f"= {path!r}: no such file or directory ({p})")
    return str(p.resolve())


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, list, bool)) else repr(value)
