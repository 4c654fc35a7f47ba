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

import copy
import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ProtocolError
from .names import name_problem
from .resources import models_dir, protocols_dir

__all__ = ["ENGINE_KEYS", "SCHEMA", "Key", "Protocol", "ProtocolError", "key_spec", "load", "loads", "parse_override"]

#: The shipped models and protocols: the checkout's ``models/`` and ``protocols/``, or their copies in an
#: installed wheel (see :mod:`neuroplastic.resources`).
MODELS_DIR = models_dir()
PROTOCOLS_DIR = protocols_dir()

_REQUIRED = object()

#: Bounds of values that are absurd on any machine: ``[train] epochs`` and the number of dense layers.
MAX_EPOCHS = 1_000_000
MAX_LAYERS = 100




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
    ``layer_list`` (list of ints or ``"all"``) or ``path``. ``also`` lists numbers allowed outside
    the bounds: an off switch such as ``0`` below a range that starts at ``2``.
    """

    kind: str
    default: Any = _REQUIRED
    doc: str = ""
    choices: tuple | Callable[[], list[str]] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()

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
        also = "".join(f"{v!r} or " for v in self.also)
        return also + noun + (f"{each} " + " and ".join(bounds) if bounds else "")

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
        if value in self.also:
            return float(value) if kind == "float" else int(value)
        lo_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        hi_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if lo_bad or hi_bad:
            raise ValueError(f"must be {self.allowed()}")
        return float(value) if kind == "float" else int(value)


_DATA = _choices_from("neuroplastic.data", "DATASETS")
_ENGINES = _choices_from("neuroplastic.engines.registry", "ENGINES")
_RULES = _choices_from("neuroplastic.rules", "RULES")


def _architectures() -> list[str]:
    from .rules.architectures import ARCHITECTURES

    return ["dense", *ARCHITECTURES]

#: The keys every protocol has, whatever its rule and engine. ``""`` is the top level.
COMMON: dict[str, dict[str, Key]] = {
    "": {
        "name": Key("str", doc="Name of the protocol; names its run directories, so a plain file name: letters, "
                    "digits and . _ + - (at most 100 characters)."),
        "description": Key("str", "", "Free text shown by `neuroplastic list`."),
        "seed": Key("int", 0, "Seed of every random draw (weights, batches, saccades, probe split and folds).", low=0),
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
        "colour": Key("str", "grey", "'grey': images as grey levels (luma); 'rgb': their red, green and blue "
                      "channels, h x w x 3, from the sources that have colour (cifar10, cifar100, stl10; see "
                      "`neuroplastic list`), as Tang et al. train. Dense encoders read the h x w x 3 values "
                      "flattened, the hinge rules' conv encoders 3 input channels; conv CLAPP and the Brian2 engine "
                      "read grey images only.", choices=("grey", "rgb")),
    },
    "stimulus": {
        "kind": Key("str", "glimpses", "How samples become glimpse sequences: patches of an image on a grid, "
                    "windows of a sound, blocks of frames of a clip (by the data's domain); 'views': two "
                    "augmented views of each whole image (hinge rules).", choices=("glimpses", "views")),
        "patch": Key("int", 4, "Glimpse size: side in pixels (images), samples (sound) or frames (video).", low=1),
        "stride": Key("int", 2, "Step between neighbouring glimpses, in the same unit as `patch`.", low=1),
        "scan": Key("str", "raster", "Order in which the eye visits an image's glimpse grid.",
                    choices=("raster", "snake")),
    },
    "model": {
        "file": Key("path", "two_compartment", "Neuron model file: a path (relative to the protocol "
                    "file) or the name of a file in models/."),
        "arch": Key("str", "dense", "Encoder: 'dense' layers of `layers` two-compartment units on flattened "
                    "glimpses, or a named convolutional CLAPP encoder on patch grids ('vgg6': the paper's; "
                    "'small': for built-in data), see neuroplastic.engines.numpy.conv_stack.", choices=_architectures),
        "layers": Key("int_list", [64, 64], "Number of neurons of each layer, input side first (arch = 'dense'; "
                      "with connectivity = 'retinotopic', the neurons at each location).", low=1),
        "connectivity": Key("str", "dense", "How a layer (arch = 'dense') is wired to the one below: 'dense' (all to "
                            "all) or 'retinotopic' (locally connected, no weight sharing: a grid of locations of "
                            "`layers` neurons each, every neuron seeing a `kernel` x `kernel` block of locations "
                            "below, with one score and modulation factor per location; image patches only), see "
                            "neuroplastic.rules.retinotopic.", choices=("dense", "retinotopic")),
        "kernel": Key("int_list", [3], "Retinotopic layers: side of a neuron's receptive field, in locations of the "
                      "layer below (the input's locations are its pixels); one value for every layer, or one per "
                      "layer.", low=1),
        "stride": Key("int_list", [1], "Retinotopic layers: step between the receptive fields of neighbouring "
                      "locations; one value for every layer, or one per layer.", low=1),
        "init_scale": Key("float", 1.0, "Feed-forward weights start as N(0, init_scale^2 * 2 / fan_in).",
                          low=0, low_open=True),
    },
    "rule": {
        "name": Key("str", "clapp_s", "Plasticity rule.", choices=_RULES),
        "lr": Key("float", 1e-3, "Learning rate eta.", low=0, low_open=True),
        "optimizer": Key("str", "adam", "How updates are applied.", choices=("adam", "sgd")),
    },
    "engine": {
        "name": Key("str", "numpy", "Simulation engine.", choices=_ENGINES),
        "variant": Key("str", "rate", "Neuron variant (Brian2 engine).", choices=("rate", "spiking")),
    },
    "train": {
        "epochs": Key("int", 10, "Passes over the training images.", low=1, high=MAX_EPOCHS),
        "checkpoint_every": Key("int", 1, "Write a resumable checkpoint every this many epochs.", low=1),
        "max_memory": Key("float", 0.0, "Memory a run may use, in GiB: a protocol whose estimated peak (weights, "
                          "optimiser state, one batch's activations, stimulus, probe features) is larger is refused "
                          "before it starts; 0 = the memory of the machine. Not part of the run's "
                          "identity.", low=0),
    },
    "evaluate": {
        "probe": Key("str", "linear", "Read-out trained on frozen features: 'linear' = multinomial logistic "
                     "regression (scikit-learn, L2 strength 1 / C); 'adam' = a linear softmax layer trained by "
                     "cross-entropy with Adam on minibatches, as the papers read out (probe_lr, probe_epochs, "
                     "probe_batch). Both standardise the features.", choices=("linear", "adam")),
        "layers": Key("layer_list", "all", "Layers to probe.", low=1),
        "pooling": Key("str", "mean", "How a sample's glimpse features become one vector: 'mean' over "
                       "glimpses (as in the paper) or 'concat' (beware: flatters random encoders).",
                       choices=("mean", "concat")),
        "baseline": Key("bool", True, "Also probe a random-weight encoder of the same architecture."),
        "C": Key("float", 1.0, "Inverse L2 strength of the logistic-regression probe.", low=0, low_open=True),
        "probe_lr": Key("float", 1e-3, "Adam's learning rate (probe = 'adam' only).", low=0, low_open=True),
        "probe_epochs": Key("int", 100, "Passes over the probe's training split (probe = 'adam' only).", low=1,
                            high=MAX_EPOCHS),
        "probe_batch": Key("int", 256, "Minibatch size (probe = 'adam' only).", low=1),
        "probe_augment": Key("bool", False, "probe = 'adam' only: every minibatch of the probe's training split is "
                             "a fresh random view of its images, encoded by the frozen network, as the papers' "
                             "read-outs train (STL-10: a random [stimulus] crop window, mirrored with probability "
                             "1/2 where [stimulus] flip is on for conv CLAPP, always for the hinge rules); the test "
                             "images are the centre windows. Needs [stimulus] crop > 0 and folds = 0; the encoder "
                             "runs once per minibatch and layer."),
        "validation": Key("float", 0.0, "Fraction of the probe's training split (of each fold's training folds "
                          "with folds >= 2) held out, stratified, as a validation split; 0 = none. probe = 'adam' "
                          "keeps the epoch of best validation accuracy (early stopping); probe = 'linear' only "
                          "holds it out, so that tuning C need never look at the test split.", low=0, high=1,
                          high_open=True),
        "folds": Key("int", 0, "How the probe is scored: 0 = fitted on the train split, tested on the test split; "
                     "k >= 2 = stratified k-fold cross-validation over every sample of the probe's data, each "
                     "predicted once by a probe fitted on the other k - 1 folds (k at most the size of the "
                     "smallest class). [data] test_fraction still decides what the encoder trains on: with "
                     "folds >= 2 every sample is probed, including those the encoder trained on without labels.",
                     low=2, also=(0,)),
        "source": Key("str", "", "Probe on another data set than the one trained on (e.g. train on cifar100, "
                      "probe cifar10); empty = [data] source."),
        "path": Key("path", "", "Directory of the probe's data set; empty = [data] path."),
        "split": Key("str", "", "Probe on this split instead of a held-out part of the training data (e.g. train "
                     "on STL-10 'unlabeled', probe 'train'); empty = hold out [data] test_fraction."),
        "test_split": Key("str", "", "Test the probe on this split (e.g. 'test'); empty = hold out "
                          "[data] test_fraction of [evaluate] split."),
    },
}


#: ``[evaluate]`` keys that only one kind of probe reads; given with another probe they are refused.
PROBE_KEYS = {"probe_lr": "adam", "probe_epochs": "adam", "probe_batch": "adam", "probe_augment": "adam"}


def _assemble() -> tuple[dict[str, dict[str, Key]], dict[str, list[str]], dict[str, dict[str, Key]]]:
    """Every key a protocol may have: the common ones, then those each rule and engine declares.

    Returns the schema; for each component key (``"rule.tau"``), who reads it (``"rule hinge_e2e_bp"``,
    ``"engine brian"``): what a refused key's message names; and each engine's own declarations of its
    keys. Two engines may read one key with different values (``[engine] device``: ``"cpu"`` or
    ``"cuda"`` for the rate engine's arrays, ``"cpp"`` and the like for Brian2); the schema holds the
    first declaration, and validation reads the protocol's engine's.
    """
    from .engines.registry import SETTINGS as ENGINE_SETTINGS
    from .rules import RULES, SETTINGS as RULE_SETTINGS

    schema = {table: dict(keys) for table, keys in COMMON.items()}
    readers: dict[str, list[str]] = {}
    per_engine: dict[str, dict[str, Key]] = {engine: {dotted: Key(**spec) for dotted, spec in keys.items()}
                                             for engine, keys in ENGINE_SETTINGS.items()}
    declared = [(dotted, Key(**spec), [f"rule {r.name}" for r in RULES.values() if dotted in r.keys])
                for dotted, spec in RULE_SETTINGS.items()]
    declared += [(dotted, spec, [f"engine {engine}"]) for engine, keys in per_engine.items()
                 for dotted, spec in keys.items()]
    for dotted, spec, who in declared:
        table, key = dotted.split(".")
        schema[table].setdefault(key, spec)
        readers.setdefault(dotted, []).extend(who)
    return schema, readers, per_engine


#: Every table and key a protocol may have: :data:`COMMON` and the keys the rules
#: (``neuroplastic.rules.SETTINGS``) and engines (``neuroplastic.engines.registry.SETTINGS``) declare.
#: :data:`ENGINE_KEYS` holds each engine's own declaration of the keys it reads.
SCHEMA, READERS, ENGINE_KEYS = _assemble()


def key_spec(dotted: str, engine: str | None = None) -> Key:
    """The declaration of ``table.key`` that a protocol on ``engine`` is validated against."""
    table, key = dotted.split(".") if "." in dotted else ("", dotted)
    return ENGINE_KEYS.get(engine, {}).get(dotted) or SCHEMA[table][key]


def used_keys(rule: str, engine: str) -> set[str]:
    """The component keys (``"table.key"``) a protocol with this rule and engine reads."""
    from .engines.registry import RULE_KEYS, SETTINGS as ENGINE_SETTINGS
    from .rules import RULES

    honoured = RULE_KEYS[engine]
    rule_keys = {k for k in RULES[rule].keys if honoured is None or k in honoured}
    return rule_keys | set(ENGINE_SETTINGS[engine])


class Section:
    """One validated table of a protocol; keys are attributes (``p.rule.lr``).

    A key the protocol's rule and engine do not read is not part of the table (nor of the run's
    identity), but reading it gives its declared default, so engine code need not ask who reads what.
    """

    def __init__(self, table: str, values: dict[str, Any]):
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            pass
        try:
            return SCHEMA[self._table][key].default
        except KeyError:
            raise AttributeError(f"protocol table [{self._table}] has no key {key!r}") from None

    def __setattr__(self, key, value):
        raise AttributeError("protocols are immutable; use Protocol.with_overrides()")

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Section({self._table!r}, {self._values!r})"


#: Keys added after runs of the protocols that do not set them existed, with the value that reproduces
#: those runs: at that value a run's identity (and so its directory name) leaves the key out.
_ADDED_KEYS = {"data.colour": "grey", "evaluate.validation": 0.0, "stimulus.mean": 0.0, "stimulus.std": 1.0,
               "rule.sampling": "rolled", "rule.head_input": "mean", "engine.array": "numpy",
               "engine.device": "cpu", "model.init": "he", "model.bias": False, "engine.chunk_glimpses": 0,
               "evaluate.probe_augment": False, "stimulus.onoff": False, "stimulus.augment": "shift",
               "rule.negative_weight": 0.0}


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
    #: The tables and keys as given (file and overrides), before defaults: what overrides apply to.
    given: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __getattr__(self, table: str) -> Section:
        sections = object.__getattribute__(self, "sections")
        if table in sections:
            return sections[table]
        raise AttributeError(table)

    def as_dict(self) -> dict[str, Any]:
        """The resolved protocol (every key its rule and engine read, defaults filled in), as TOML-ready data."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "seed": self.seed}
        out.update({t: s.as_dict() for t, s in self.sections.items()})
        return out

    def model_files(self) -> dict[str, Path]:
        """The model files this protocol's network is built from, by key."""
        files = {"model.file": self.model_path, "model.synapses": self.synapses_path}
        return {k: v for k, v in files.items() if v is not None}

    def identity(self) -> dict[str, Any]:
        """What a run of this protocol is: the resolved protocol and the contents of its model files.

        Data paths are reduced to the name of the data directory: the same data set gives the same run
        wherever it lies on disk.
        """
        protocol = self.as_dict()
        protocol["train"].pop("max_memory", None)       # a resource bound, not what the run computes
        for dotted, value in _ADDED_KEYS.items():       # as before the key existed: earlier runs keep their names
            table, key = dotted.split(".")
            if key in protocol.get(table, {}) and protocol[table][key] == value:
                protocol[table].pop(key)
        for table in ("data", "evaluate"):
            if protocol[table].get("path"):
                protocol[table]["path"] = Path(protocol[table]["path"]).name
        models = {k: hashlib.sha256(path.read_bytes()).hexdigest() for k, path in self.model_files().items()}
        return {"protocol": protocol, "models": models}

    def digest(self) -> str:
        """Hash of :meth:`identity`: names the run directory, so editing a model file makes a new run."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, overrides: list[str]) -> "Protocol":
        """Return a new protocol with ``table.key=value`` overrides applied and validated."""
        raw = copy.deepcopy(self.given) if self.given is not None else self.as_dict()
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
    if any(c in item for c in "\n\r\x00"):
        raise ProtocolError("--set", path, f"= {text!r}: one --set is one value on one line (no line breaks "
                            "or NUL); give each setting its own --set")
    try:
        parsed = tomllib.loads(f"v = {text}")
        value = parsed["v"] if list(parsed) == ["v"] else text
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
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(str(path), "", f"not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ProtocolError(str(path), "", "not a text file (TOML must be UTF-8)") from None
    except OSError as err:
        raise ProtocolError(str(path), "", f"cannot read: {err.strerror or err}") from None
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


def _check_names(raw: dict[str, Any], source: str, problems: list | None = None) -> None:
    """Reject unknown tables and keys, with a 'did you mean' suggestion.

    With ``problems``, append ``(key, message)`` to it instead of raising at the first one.
    """
    found: list[tuple[str, str]] = []
    known_top = set(SCHEMA[""]) | (set(SCHEMA) - {""})
    for name, value in raw.items():
        if name not in known_top:
            close = _did_you_mean(name, sorted(known_top))
            hint = f"; did you mean {close!r}?" if close else ""
            found.append(("", f"unknown key or table {name!r}{hint} (allowed: {', '.join(sorted(known_top))})"))
        elif name in SCHEMA and name != "":
            if not isinstance(value, dict):
                found.append(("", f"{name!r} must be a table ([{name}]), got {value!r}"))
                continue
            for key in value:
                if key not in SCHEMA[name]:
                    close = _did_you_mean(key, SCHEMA[name])
                    hint = f"; did you mean {close!r}?" if close else ""
                    found.append((f"{name}.{key}", f"unknown key{hint} (allowed in [{name}]: "
                                  f"{', '.join(SCHEMA[name])})"))
    if problems is not None:
        problems.extend(found)
    elif found:
        raise ProtocolError.collect(source, found)


def _validate(raw: dict[str, Any], source: str, base_dir: Path) -> Protocol:
    """Resolve ``raw`` against the schema; every problem of the file is reported at once."""
    problems: list[tuple[str, str]] = []
    _check_names(raw, source, problems)
    resolved: dict[str, dict[str, Any]] = {table: {} for table in SCHEMA}

    def resolve(table: str, key: str, spec: Key) -> None:
        given = raw if table == "" else raw.get(table, {})
        given = given if isinstance(given, dict) else {}
        dotted = f"{table}.{key}" if table else key
        if key not in given:
            if spec.required:
                problems.append((dotted, f"missing; it is required ({spec.doc})"))
            else:
                resolved[table][key] = copy.deepcopy(spec.default)
            return
        try:
            resolved[table][key] = spec.check(given[key])
        except ValueError as err:
            problems.append((dotted, f"= {_show(given[key])}: {err}"))

    for table, keys in COMMON.items():
        for key, spec in keys.items():
            if key not in PROBE_KEYS or table != "evaluate":
                resolve(table, key, spec)
    probe, given_ev = resolved["evaluate"].get("probe"), raw.get("evaluate")
    for key, kind in PROBE_KEYS.items():           # read by one kind of probe only: absent from the others' runs
        if probe == kind:
            resolve("evaluate", key, COMMON["evaluate"][key])
        elif probe is not None and isinstance(given_ev, dict) and key in given_ev:
            problems.append((f"evaluate.{key}", f"= {_show(given_ev[key])}: read only with [evaluate] probe = "
                             f"{kind!r}, not with probe = {probe!r}"))
    if isinstance(name := resolved[""].get("name"), str) and (problem := name_problem(name)) is not None:
        problems.append(("name", f"= {_show(name)}: {problem} (it names the run directories)"))
    rule, engine = resolved["rule"].get("name"), resolved["engine"].get("name")
    if rule is not None and engine is not None:
        used = used_keys(rule, engine)
        for dotted, readers in READERS.items():
            table, key = dotted.split(".")
            given = raw.get(table, {})
            if dotted in used:
                resolve(table, key, key_spec(dotted, engine))
            elif isinstance(given, dict) and key in given:
                problems.append((dotted, f"= {_show(given[key])}: not read by rule {rule!r} on engine {engine!r}; "
                                 f"read by {', '.join(readers)}"))
    if not problems:
        for check in (lambda: _check_layers(resolved, source),
                      lambda: _check_data(resolved["data"], base_dir, source),
                      lambda: _check_probe_data(resolved["evaluate"], resolved["data"], base_dir, source)):
            try:
                check()
            except ProtocolError as err:
                problems.extend(err.problems)
    paths: dict[str, Path] = {}                 # "file", and "synapses" where the engine reads one
    for key in ("file", "synapses"):
        if key in resolved["model"]:
            try:
                paths[key] = resolve_model(resolved["model"][key], base_dir, source, key=f"model.{key}")
            except ProtocolError as err:
                problems.extend(err.problems)
    if problems:
        raise ProtocolError.collect(source, problems)
    top = resolved.pop("")
    sections = {t: Section(t, v) for t, v in resolved.items()}
    return Protocol(top["name"], top["description"], top["seed"], sections, source, paths.get("file"),
                    paths.get("synapses"), given=copy.deepcopy(raw))


def _check_layers(resolved: dict[str, dict[str, Any]], source: str) -> None:
    """Cross-check: at most :data:`MAX_LAYERS` dense layers, and every probed layer must exist in the model."""
    model = resolved["model"]
    if model["arch"] == "dense":
        n, given = len(model["layers"]), f"[model] layers = {_show(model['layers'])}"
        if n > MAX_LAYERS:
            raise ProtocolError(source, "model.layers", f"= [{model['layers'][0]}, ...] ({n} layers): at most "
                                f"{MAX_LAYERS} layers are allowed")
    else:
        from .rules.architectures import parse_architecture

        n, given = len(parse_architecture(model["arch"])), f"[model] arch = {_show(model['arch'])}"
    _check_connectivity(resolved, source)
    chosen = resolved["evaluate"]["layers"]
    if chosen != "all" and (too_big := [l for l in chosen if l > n]):
        raise ProtocolError(source, "evaluate.layers", f"= {_show(chosen)}: layer {too_big[0]} does not exist; "
                            f"the model has {n} layer{'s' if n != 1 else ''} ({given}), so layers are "
                            f"numbered 1 to {n}")


def _check_connectivity(resolved: dict[str, dict[str, Any]], source: str) -> None:
    """Retinotopic layers: dense CLAPP layers on glimpse patches whose kernels fit; kernel and stride only with them."""
    from .rules import RULES
    from .rules.retinotopic import stack_sizes

    model, rule = resolved["model"], resolved["rule"]["name"]
    if model["connectivity"] == "dense":
        for key in ("kernel", "stride"):
            if model[key] != SCHEMA["model"][key].default:
                raise ProtocolError(source, f"model.{key}", f"= {_show(model[key])}: read only by retinotopic layers; "
                                    "set [model] connectivity = 'retinotopic', or leave it out")
        return
    where = "[model] connectivity = 'retinotopic'"
    if model["arch"] != "dense":
        raise ProtocolError(source, "model.arch", f"= {_show(model['arch'])}: {where} wires dense-style layers of "
                            "neurons; allowed with it: 'dense' (a conv encoder shares its weights already)")
    if RULES[rule].family != "clapp" or resolved["stimulus"]["kind"] != "glimpses":
        raise ProtocolError(source, "model.connectivity", f"= 'retinotopic': read by the CLAPP rules on glimpse "
                            f"patches (rule {rule!r}, [stimulus] kind = {_show(resolved['stimulus']['kind'])}); "
                            "allowed here: 'dense'")
    patch = resolved["stimulus"]["patch"]
    try:
        stack_sizes(patch * patch, model["layers"], "retinotopic", patch=patch, kernel=model["kernel"],
                    stride=model["stride"])
    except ValueError as err:
        key = "model.stride" if "stride" in str(err) else "model.kernel"
        raise ProtocolError(source, key, f"= {_show(model[key.split('.')[1]])}: {err} ([stimulus] patch = "
                            f"{patch}: the input is a {patch} x {patch} sheet)") from None


def resolve_model(name: str, base_dir: Path, source: str, key: str = "model.file") -> Path:
    """Find a model file: a path relative to the protocol's directory, or the name of a shipped model."""
    shipped = models_dir()
    candidates = [base_dir / name, shipped / name, shipped / f"{name}.toml"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = sorted(p.stem for p in shipped.glob("*.toml"))
    raise ProtocolError(source, key, f"= {name!r}: no such model file (looked in "
                        f"{base_dir} and {shipped}; shipped models: {', '.join(known) or 'none'})")


def _check_data(data: dict[str, Any], base_dir: Path, source: str) -> None:
    """Cross-check ``[data]``: split, label and colour the source has, a path that exists (made absolute)."""
    from .data import DATASETS, colour_problem

    src = DATASETS[data["source"]]
    for key, allowed in (("split", src.splits), ("label", src.labels)):
        if data[key] and data[key] not in allowed:
            raise ProtocolError(source, f"data.{key}", f"= {data[key]!r}: not a {key} of {data['source']}; "
                                f"allowed: {', '.join(map(repr, allowed))}")
    if (problem := colour_problem(data["source"], data["colour"])) is not None:
        raise ProtocolError(source, "data.colour", f"= {data['colour']!r}: {problem}")
    data["path"] = _absolute_path(data["path"], base_dir, source, "data.path")


def _check_probe_data(ev: dict[str, Any], data: dict[str, Any], base_dir: Path, source: str) -> None:
    """Cross-check the probe's own data (``[evaluate] source, path, split, test_split``), if any."""
    from .data import DATASETS, colour_problem

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
    if ev["source"] and (problem := colour_problem(ev["source"], data["colour"])) is not None:
        raise ProtocolError(source, "evaluate.source", f"= {ev['source']!r}: the probe reads its data in [data] "
                            f"colour = {data['colour']!r}, and {problem}")
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
