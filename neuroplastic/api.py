"""The Python API: load a protocol, run it, read its results, train a rule on your own arrays.

Everything here goes through the code of ``neuroplastic run``
(:func:`neuroplastic.runner.run_protocol`): the same checks, training, probe and run directory, so a
run from Python and one from the command line give the same numbers. The names are exported lazily
by the package, so ``import neuroplastic`` stays light (numpy, scikit-learn and Brian2 load on first
use)::

    import neuroplastic

    protocol = neuroplastic.load_protocol("clapp_digits", train__epochs=5, model__layers=[32, 32])
    result = neuroplastic.run(protocol)               # in memory: nothing is left on disk
    result.probe                                      # {1: 0.89, 2: 0.90}: linear probe per layer
    result.weights["1/W"], result.features[2], result.labels

**Overrides** are keyword arguments ``table__key=value``: ``train__epochs=5`` is the command line's
``--set train.epochs=5``, and top-level keys are plain (``seed=2``). Values are Python values (numbers,
strings, booleans, lists). A key or value the protocol does not allow raises the
:class:`~neuroplastic.errors.ProtocolError` ``neuroplastic run --set`` reports, naming the dotted key.

**Run directories.** ``run(protocol, out)`` writes the run directory ``out/<name>-<hash>`` exactly as
the command line does. A run that already finished there is loaded, not trained again; an
unfinished one is refused unless ``resume=True`` (continue from its last checkpoint) or
``force=True`` (start over), as ``--resume`` and ``--force`` do, and the errors name those flags.
``run(protocol)`` (no ``out``) runs in a temporary directory that is read into the
:class:`Result` and removed, so calling it again (a notebook cell run twice) trains again from the
same seed and gives the same numbers. :func:`load_run` reads any run directory.

**Brian2 runs.** The engine frees its network after every simulation (a compiled binary is reused
from the build cache instead), so no live ``Network`` or monitor outlives a run. What a run keeps
is in :attr:`Result.recordings`: the monitors' arrays of the last epoch (``brian_monitors``, and
``brian_spikes`` for the spiking variant), as saved in the run directory.

**Your own arrays.** :func:`train_clapp` trains a dense CLAPP or CLAPP-s stack on glimpse sequences
you give, with the numpy engine's batches, pairs and optimiser (bit-identical to a run of the same
sequences and seed), and returns the network, whose ``features(x)`` reads every layer.

Examples
--------
>>> import numpy as np, neuroplastic
>>> x = np.random.default_rng(0).standard_normal((40, 5, 16)).astype("float32")  # 40 sequences of 5 glimpses
>>> fit = neuroplastic.train_clapp(x, layers=[8, 8], epochs=3, batch_size=10)
>>> fit.loss.shape, [f.shape for f in fit.features(x)]
((3, 2), [(40, 5, 8), (40, 5, 8)])
>>> neuroplastic.load_protocol("clapp_digits", train__epochs=2).train.epochs
2
"""
from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NeuroplasticError, ProtocolError, RunError

__all__ = ["ClappFit", "Result", "load_protocol", "load_run", "run", "train_clapp"]

_LAYER = re.compile(r"^layer(\d+)$")


# -- protocols -------------------------------------------------------------------------------------------
def load_protocol(name_or_path, **overrides):
    """Load a protocol by shipped name (``"clapp_digits"``, see ``neuroplastic list``) or file path.

    Parameters
    ----------
    name_or_path : str, Path or Protocol
        A shipped protocol's name, a protocol file, or a loaded
        :class:`~neuroplastic.protocol.Protocol` to apply more overrides to.
    **overrides
        ``table__key=value`` sets ``[table] key`` (``rule__lr=3e-4``, ``model__layers=[32, 32]``);
        a top-level key is given as is (``seed=2``). Applied in order, then validated as a whole.

    Returns
    -------
    Protocol
        The validated protocol.

    Raises
    ------
    ProtocolError
        Unknown protocol, table or key, or a value that is not allowed: the message names the key
        (dotted, as ``--set`` does) and what is allowed.
    """
    from .protocol import Protocol, load
    from .resources import find_protocol

    items = [f"{key.replace('__', '.')}={_toml(value, key.replace('__', '.'))}" for key, value in overrides.items()]
    try:
        if isinstance(name_or_path, Protocol):
            return name_or_path.with_overrides(items) if items else name_or_path
        return load(find_protocol(name_or_path), items)
    except ProtocolError as err:
        if err.source != "--set":        # the file's own problems, or a value checked against the file
            raise
        raise ProtocolError.collect("load_protocol overrides", err.problems) from None


def _toml(value: Any, key: str) -> str:
    """``value`` as the TOML text ``--set key=...`` would be given."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        v = float(value)
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)      # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v, key) for v in value) + "]"
    raise ProtocolError("load_protocol overrides", key, f"= {value!r}: not a protocol value; give a number, "
                        "a string, a boolean or a list of them")


# -- runs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False, eq=False)
class Result:
    """A run's results, read from its run directory into memory (see :meth:`load`).

    Attributes
    ----------
    directory : Path or None
        The run directory; ``None`` for an in-memory run (:func:`run` without ``out``).
    manifest : dict
        ``manifest.json``: the resolved protocol (``manifest["protocol"]``), seed, versions, status, timings.
    summary : dict
        ``summary.json``: probe accuracies (``"probe"``, ``"probe_random"``, keys are layer numbers as
        strings) and whatever the engine adds (the spiking variant's ``fidelity``); ``{}`` before the
        run finished.
    metrics : list of dict
        Rows ``epoch, stage, layer, name, value`` of ``metrics.csv`` (see :meth:`history`).
    weights : dict
        The trained parameters (``"1/W"``, ``"1/W_pred"``, ...; layers from 1), from the final
        checkpoint; optimiser state is not included.
    initial_weights : dict or None
        The parameters the run started from (its epoch-0 checkpoint); ``None`` if that file is missing.
    features : dict
        Layer number -> the pooled features the probe read, ``(n_samples, n_features)``.
    labels : array or None
        The probe's label of each row of ``features``.
    recordings : dict
        Every other array file the run saved, by name: for Brian2 runs the last epoch's monitors
        (``"brian_monitors"``: per-glimpse scores ``layer<l>/u``, modulation ``layer<l>/M``, traces of a few
        neurons; ``"brian_spikes"`` for the spiking variant).
    reused : bool
        The run had finished before (:func:`run` with ``out``): it was loaded, not trained.
    """

    directory: Path | None
    manifest: dict
    summary: dict
    metrics: list
    weights: dict
    initial_weights: dict | None
    features: dict
    labels: np.ndarray | None
    recordings: dict = field(default_factory=dict)
    reused: bool = False

    @classmethod
    def load(cls, directory: str | Path, *, reused: bool = False) -> "Result":
        """Read the run directory ``directory`` (finished or not) into memory.

        An unfinished run has no summary or features yet, and its weights are those of its newest
        checkpoint. Raises :class:`~neuroplastic.errors.RunError` for a directory that is not a run,
        or a finished run whose final checkpoint is missing or damaged.
        """
        from .results import Run, read_metrics

        run_ = Run.load(directory)
        directory = run_.directory
        latest = run_.latest_checkpoint()
        if latest is None:
            raise RunError(f"{directory}: no intact checkpoint (checkpoints/epoch_*.npz); its weights are lost")
        epoch, arrays, _ = latest
        status = run_.manifest.get("status")
        final = run_.manifest.get("protocol", {}).get("train", {}).get("epochs")
        if status == "finished" and final is not None and epoch != final:
            raise RunError(f"{directory}: the final checkpoint (epoch {final}) is missing or damaged (the newest "
                           f"intact one is epoch {epoch}); run it again with --force (force=True)")
        try:
            initial = run_.initial_params()
        except RunError:
            initial = None
        summary = run_.summary()
        features, labels, recordings = {}, None, {}
        for path in sorted(directory.glob("*.npz")):
            with np.load(path) as data:
                loaded = {k: data[k] for k in data.files}
            if path.stem != "features":
                recordings[path.stem] = loaded
                continue
            labels = loaded.get("labels")
            features = {int(m.group(1)): v for k, v in loaded.items() if (m := _LAYER.match(k))}
        return cls(directory, run_.manifest, summary, read_metrics(directory),
                   {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")},
                   initial, dict(sorted(features.items())), labels, recordings, reused)

    @property
    def name(self) -> str:
        """The protocol's name."""
        return self.manifest.get("name", "")

    @property
    def status(self) -> str:
        """``finished``, ``running`` (or killed) or ``failed``."""
        return self.manifest.get("status", "unknown")

    @property
    def probe(self) -> dict[int, float]:
        """Linear-probe accuracy of the trained encoder, by layer."""
        return {int(k): float(v) for k, v in self.summary.get("probe", {}).items()}

    @property
    def probe_random(self) -> dict[int, float]:
        """Linear-probe accuracy of the random-weight encoder (the baseline), by layer; ``{}`` without one."""
        return {int(k): float(v) for k, v in self.summary.get("probe_random", {}).items()}

    def history(self, name: str = "loss", stage: str = "train") -> dict[int, np.ndarray]:
        """One metric per epoch, by layer: ``history("loss")[1][e - 1]`` is layer 1's mean loss in epoch ``e``.

        ``name`` is ``loss`` or ``modulated`` (the fraction of pairs with a non-zero modulation factor),
        or what else the rule records; see :attr:`metrics` for every row.
        """
        out: dict[int, list] = {}
        for row in sorted((r for r in self.metrics if r["stage"] == stage and r["name"] == name),
                          key=lambda r: (r["layer"], r["epoch"])):
            out.setdefault(row["layer"], []).append(row["value"])
        return {layer: np.asarray(values) for layer, values in out.items()}

    def __repr__(self) -> str:
        where = "in memory" if self.directory is None else str(self.directory)
        probe = ", ".join(f"{k}: {v:.3f}" for k, v in self.probe.items())
        return f"<Result {self.name!r} {self.status} ({where}); probe {{{probe}}}>"


def load_run(directory: str | Path) -> Result:
    """Read an existing run directory into a :class:`Result` (same as :meth:`Result.load`)."""
    return Result.load(directory)


def run(protocol, out: str | Path | None = None, *, resume: bool = False, force: bool = False,
        progress: bool = False) -> Result:
    """Train, probe and read back ``protocol``: :func:`load_protocol`'s result, or a name or path.

    Parameters
    ----------
    out : str or Path, optional
        Root of the run directories (the command line's ``--out``). A run that finished there
        already is loaded (``Result.reused``), not trained again. Without ``out`` the run happens in
        a temporary directory, read into the result and removed: nothing is left on disk.
    resume, force : bool
        For an unfinished run under ``out``: continue it from its last checkpoint, or start over
        (``force`` also trains a finished run again).
    progress : bool
        Show the progress bar.

    Raises
    ------
    NeuroplasticError
        The package's error that stopped the run, with its message: bad input (``ProtocolError``,
        ``RunError``, ...) before anything is written, or e.g. ``TrainingDiverged`` (the run directory
        keeps its last good checkpoint, for ``resume=True``).
    KeyboardInterrupt
        Interrupted; the run under ``out`` is marked failed and continues with ``resume=True``.
    """
    from .protocol import Protocol
    from .runner import run_protocol

    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    command = ["neuroplastic.run", str(protocol.source)]
    if out is not None:
        outcome = run_protocol(protocol, out, resume=resume, force=force, progress=progress, command=command)
        _raise_failure(outcome)
        return Result.load(outcome.directory, reused=outcome.reused)
    if resume:
        raise RunError("resume=True continues a run directory: give out=, the root it is in (an in-memory run "
                       "keeps no directory to resume)")
    with tempfile.TemporaryDirectory(prefix="neuroplastic-") as root:
        outcome = run_protocol(protocol, root, progress=progress, command=command)
        _raise_failure(outcome, note="(an in-memory run: its run directory is removed; give out= to keep it)")
        loaded = Result.load(outcome.directory)
    return Result(None, loaded.manifest, loaded.summary, loaded.metrics, loaded.weights, loaded.initial_weights,
                  loaded.features, loaded.labels, loaded.recordings)


def _raise_failure(outcome, note: str | None = None) -> None:
    """Raise the error that ended a run (its outcome's), as the package's error with its message."""
    if outcome.code == 0:
        return
    err = outcome.exception
    if not isinstance(err, (NeuroplasticError, KeyboardInterrupt)):     # not expected; say what is known
        err = RunError(f"{outcome.directory}: {outcome.error}")
    if note is not None and isinstance(err, NeuroplasticError):
        err.add_note(note)
    raise err


# -- your own arrays -------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False, eq=False)
class ClappFit:
    """A dense CLAPP(-s) stack trained by :func:`train_clapp`.

    ``net`` is the numpy engine's :class:`~neuroplastic.engines.numpy.clapp_stack.ClappStack` (its
    ``params`` are the weights, keyed ``"1/W"``, ``"1/W_pred"``, ...); ``loss`` and ``modulated`` are the
    per-epoch means ``(epochs, layers)`` of the hinge loss and of the fraction of modulated pairs.
    """

    net: Any
    loss: np.ndarray
    modulated: np.ndarray

    @property
    def params(self) -> dict:
        """The trained weights by name (layers from 1)."""
        return self.net.params

    def features(self, x) -> list:
        """Rates of every layer for glimpses ``x`` (..., n_in): a list of arrays (..., n_l)."""
        return self.net.features(np.asarray(x, dtype=self.net.params["1/W"].dtype))


def train_clapp(sequences, layers=(32,), *, rule: str = "clapp_s", epochs: int = 10, batch_size: int = 64,
                lr: float = 1e-3, optimizer: str = "adam", negatives: int = 1, saccade_prob: float = 0.5,
                seed: int = 1, dtype: str = "float32", init_scale: float = 1.0,
                pred_init_scale: float = 0.1) -> ClappFit:
    """Train a dense CLAPP or CLAPP-s stack on your own glimpse sequences, as the numpy engine does.

    Each epoch is a random permutation of the sequences cut into batches of ``batch_size`` (a batch
    of one is skipped); within a batch, a fixation pairs glimpse ``t - 1`` with glimpse ``t`` of the
    same sequence and a saccade with glimpse ``t`` of another (:meth:`ClappStack.pair_sets
    <neuroplastic.engines.numpy.clapp_stack.ClappStack.pair_sets>`). Weights are drawn from
    ``SeedSequence([seed, 0])`` and the batches and pairs from ``SeedSequence([seed, 1])``, the streams
    a protocol of that seed uses, so the same sequences and settings give a run's weights bit for bit.

    Parameters
    ----------
    sequences : array (n, T, n_in)
        ``n >= 2`` sequences of ``T >= 2`` glimpses (e.g. patches of one image along a scan path).
    layers : sequence of int
        Units per layer.
    rule : ``"clapp_s"`` or ``"clapp"``
        CLAPP-s (contrastive: a positive and ``negatives`` saccade sets at every step) or CLAPP
        (each step is a saccade with probability ``saccade_prob``, with a learned retrodiction
        ``W_retro`` of its own, drawn independently of ``W_pred``).
    epochs, batch_size, lr, optimizer, negatives, saccade_prob, init_scale, pred_init_scale, dtype
        As ``[train]``, ``[rule]``, ``[stimulus]``, ``[model]`` and ``[engine]`` of a protocol.
    """
    from .engines.numpy.clapp_stack import ClappStack
    from .engines.numpy.optim import make_optimizer
    from .rules import RULES

    source = "train_clapp"
    dense = sorted(n for n, r in RULES.items() if r.family == "clapp")
    if rule not in dense:
        raise ProtocolError(source, "rule", f"= {rule!r}: not a dense CLAPP rule; allowed: "
                            f"{', '.join(map(repr, dense))}")
    if optimizer not in ("adam", "sgd"):
        raise ProtocolError(source, "optimizer", f"= {optimizer!r}; allowed: 'adam', 'sgd'")
    x = np.asarray(sequences, dtype=dtype)
    if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ProtocolError(source, "sequences", f"shape {x.shape}: must be (n, T, n_in) with n >= 2 sequences "
                            "(a saccade goes to another one) of T >= 2 glimpses (a pair needs a previous glimpse)")
    if batch_size < 2:
        raise ProtocolError(source, "batch_size", f"= {batch_size}: must be >= 2 (a saccade goes to another "
                            "sequence of the batch)")
    layers = [int(n) for n in layers]
    if not layers or min(layers) < 1:
        raise ProtocolError(source, "layers", f"= {layers}: give at least one layer of >= 1 units")
    net = ClappStack.init([x.shape[-1], *layers], rule, np.random.default_rng(np.random.SeedSequence([seed, 0])),
                          dtype=dtype, init_scale=init_scale, pred_init_scale=pred_init_scale)
    opt = make_optimizer(optimizer, lr)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    loss, modulated = np.zeros((epochs, len(layers))), np.zeros((epochs, len(layers)))
    for e in range(epochs):
        order, seen = rng.permutation(len(x)), 0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            shifts, weights = net.pair_sets(len(idx), x.shape[1], rng, negatives, saccade_prob)
            stats = net.train_batch(x[idx], opt, shifts, weights)
            loss[e] += np.asarray(stats.loss) * len(idx)
            modulated[e] += np.asarray(stats.modulated) * len(idx)
            seen += len(idx)
        loss[e], modulated[e] = loss[e] / seen, modulated[e] / seen
    return ClappFit(net, loss, modulated)
