"""The engine interface and the one training loop every engine runs through.

An :class:`Engine` says what is particular to it -- which settings it can run (:meth:`~Engine.check`),
its network with fresh weights (:meth:`~Engine.init`), one epoch of learning (:meth:`~Engine.epoch`)
and the features the probe reads (:meth:`~Engine.features`) -- and :func:`train` does the rest, the
same way for all: resume from the newest checkpoint, run the epochs, record the metrics, stop a run
whose loss or weights are no longer finite, checkpoint, probe the trained and the random encoder.

Randomness comes from three generators seeded by ``(seed, k)`` (:func:`~neuroplastic.engines.prepare.seed_sequence`):
the weights (k = 0, given to :meth:`Engine.init`), the training stream (k = 1: batches, saccades,
negatives, augmentations) and the probe split and folds (k = 2). The training generator's state is
checkpointed with the weights and the optimiser, so a resumed run is bit-identical to an
uninterrupted one.

Layers are numbered from 1 everywhere a layer is named: metrics, saved arrays, the probe table,
``[evaluate] layers``, parameter keys (``"1/W"`` is layer 1's weights) and Brian2 objects (``layer1``).
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..errors import ProtocolError, TrainingDiverged
from ..progress import phase, showing
from ..protocol import SCHEMA
from ..evaluate import chosen_layers, pool_glimpses, probe_layers
from ..evaluate.probe import ProbeSettings
from .prepare import Prepared, prepare, seed_sequence

__all__ = ["Engine", "EpochResult", "Model", "probe_encoder", "require", "require_defaults", "train"]

log = logging.getLogger(__name__)


@dataclass
class Model:
    """An engine's network during a run, as the training loop sees it.

    ``params`` (name -> array) and ``optimizer`` (``state_dict``/``load_state_dict``, or ``None``)
    are what a checkpoint holds; ``n_layers`` the layers the metrics speak of; ``steps`` and
    ``unit`` size the progress bar (per epoch). ``net`` is the engine's own object; ``summary``
    is added to the run's summary.
    """

    params: dict
    n_layers: int
    net: object = None
    optimizer: object = None
    steps: int = 1
    unit: str = "batch"
    summary: dict = field(default_factory=dict)
    #: Where ``params`` and the optimiser state live when not in numpy (the rate engine on torch or CuPy):
    #: ``numpy(dict)`` brings a dict of arrays to the host, ``params(dict)`` moves numpy arrays back. ``None``: numpy.
    arrays: object = None

    def host(self, state: dict) -> dict:
        """``state`` (weights, optimiser moments) as numpy arrays: what checkpoints, checks and the probe read."""
        return state if self.arrays is None else self.arrays.numpy(state)

    def device(self, state: dict) -> dict:
        """Numpy arrays read from a checkpoint, moved to where this model computes."""
        return state if self.arrays is None else self.arrays.params(state)


@dataclass
class EpochResult:
    """One epoch's mean metrics ``{(layer, name): value}`` (layer from 1) and arrays to save by name."""

    means: dict
    arrays: dict = field(default_factory=dict)


class Engine(ABC):
    """What an engine must provide; :func:`train` runs every engine through the same loop."""

    #: ``[engine] name`` of this engine.
    name: str = ""

    @abstractmethod
    def check(self, protocol, running: bool = True) -> None:
        """Refuse settings this engine cannot run, before any run directory exists.

        Raise a :class:`~neuroplastic.errors.ProtocolError` (or ``DeviceError``); ``running=False``
        checks for a build that will not run here (e.g. CUDA without a GPU).
        """

    @abstractmethod
    def init(self, protocol, prepared: Prepared, rng: np.random.Generator) -> Model:
        """The protocol's network with fresh weights drawn from ``rng`` (the weights stream)."""

    @abstractmethod
    def epoch(self, model: Model, epoch: int, rng: np.random.Generator, tick: Callable[[], None]) -> EpochResult:
        """Learn for one epoch (``tick()`` after each of ``model.steps`` steps); return its mean metrics."""

    @abstractmethod
    def features(self, model: Model, params: dict, probe: Prepared) -> list:
        """Features ``(n, glimpses, n_l)`` of every layer for the probe's data, with weights ``params``."""

    def probe_views(self, model: Model, params: dict, probe: Prepared):
        """``views(idx, rng)``: every layer's features, shaped as :meth:`features`', of fresh random training
        views of the probe's samples ``idx`` (``[evaluate] probe_augment``); None where the engine has none."""
        return None

    def readouts(self, model: Model, initial: dict, probe: Prepared) -> dict:
        """Other readouts of the same network to probe beside :meth:`features`: ``{name: (trained, initial)}``.

        Each is probed like the features and reported as ``probe_<name>`` and ``probe_random_<name>``
        (e.g. a spiking network's weights read out as rates); optional.
        """
        return {}

    def diagnostics(self, model: Model) -> dict:
        """Measurements of the trained network to add to the run's summary (e.g. a spiking network's fidelity)."""
        return {}

    def release(self, model: Model) -> None:
        """Free what the model holds beyond its weights (compiled networks, files); optional."""

    def build(self, protocol, prepared: Prepared):
        """Generate and compile the network without running it (``--build-only``); return its directory."""
        raise ProtocolError(protocol.source, "engine.name", f"= {protocol.engine.name!r}: --build-only compiles "
                            "a Brian2 network; it needs [engine] name = \"brian\"")


def train(engine: Engine, protocol, run, *, progress: bool = True, prepared: Prepared | None = None) -> dict:
    """Train ``protocol`` with ``engine``, checkpoint, probe, and write everything into ``run``; return the summary.

    ``prepared`` is :func:`~neuroplastic.engines.prepare.prepare`'s result (computed here if not given), which has
    checked the protocol with the engine. ``progress`` shows the epochs' bar and each later phase's status on stderr.
    """
    with showing(progress):
        return _train(engine, protocol, run, progress, prepared)


def _train(engine: Engine, protocol, run, progress: bool, prepared: Prepared | None) -> dict:
    prepared = prepared if prepared is not None else prepare(protocol)
    model = engine.init(protocol, prepared, np.random.default_rng(seed_sequence(protocol, 0)))
    initial = {k: np.array(v, copy=True) for k, v in model.host(model.params).items()}
    rng = np.random.default_rng(seed_sequence(protocol, 1))
    tr = protocol.train
    start, rows = resume_training_state(run, model, rng)
    bar = tqdm(total=tr.epochs * model.steps, initial=start * model.steps, disable=not progress,
               desc=protocol.name, unit=model.unit, leave=False)
    try:
        for epoch in range(start + 1, tr.epochs + 1):
            began = time.monotonic()
            result = engine.epoch(model, epoch, rng, bar.update)
            log.info("epoch %d/%d: done in %.1f s%s", epoch, tr.epochs, time.monotonic() - began,
                     "".join(f", layer {layer} {name} {v:.4g}" for (layer, name), v in sorted(result.means.items())
                             if name == "loss"))
            rows += [dict(epoch=epoch, stage="train", layer=layer, name=name, value=float(v))
                     for (layer, name), v in sorted(result.means.items())]
            for name, arrays in result.arrays.items():
                run.save_arrays(name, arrays)
            bad = [f"layer {layer} {name}" for (layer, name), v in sorted(result.means.items()) if not np.isfinite(v)]
            if bad or (bad := not_finite(model)):
                raise_diverged(protocol, run, epoch, bad)
            if epoch % tr.checkpoint_every == 0 or epoch == tr.epochs:
                save_training_state(run, epoch, model, rng, rows)
        bar.close()
        probe = prepared.probe_set()
        with phase("probe features (trained)", logger=log):
            features = engine.features(model, model.params, probe)
        random_features = None
        if protocol.evaluate.baseline:
            with phase("probe features (random)", logger=log):
                random_features = engine.features(model, initial, probe)
        readouts = engine.readouts(model, initial, probe)
        diagnostics = engine.diagnostics(model)
        views = (None, None)                      # the frozen encoders' fresh views, for an augmented probe
        if protocol.evaluate.probe_augment:
            views = (engine.probe_views(model, model.params, probe),
                     engine.probe_views(model, initial, probe) if protocol.evaluate.baseline else None)
    finally:
        bar.close()
        engine.release(model)
    with phase("linear probe" + (" (trained and random)" if random_features is not None else ""), logger=log):
        probe_rows, summary = probe_encoder(protocol, features, random_features, probe.dataset.labels,
                                            probe.train_idx, probe.test_idx, run=run, sample_ids=probe.dataset.sample_ids,
                                            views=views)
    rows += probe_rows
    for name, (trained, rand) in readouts.items():
        with phase(f"linear probe ({name})", logger=log):
            more_rows, more = probe_encoder(protocol, trained, rand if protocol.evaluate.baseline else None,
                                            probe.dataset.labels, probe.train_idx, probe.test_idx)
        rows += [{**r, "stage": f"{r['stage']}_{name}"} for r in more_rows]
        summary.update({f"{k}_{name}": v for k, v in more.items()})
    run.write_metrics(rows)
    summary.update(model.summary)
    summary.update(diagnostics)
    return summary


def require(protocol, dotted: str, allowed: tuple, why: str) -> None:
    """Refuse a value of ``table.key`` this engine cannot run: the error names the key, the value, ``why`` and what is allowed."""
    table, key = dotted.split(".")
    value = getattr(getattr(protocol, table), key)
    if value not in allowed:
        raise ProtocolError(protocol.source, dotted, f"= {value!r}: {why}; allowed: {', '.join(map(repr, allowed))}")


def require_defaults(protocol, keys: list[str], why: str) -> None:
    """Refuse settings an engine (or rule) does not use: each ``table.key`` must keep its default.

    The error names the key, the value given, the allowed value and ``why``, so a protocol never
    silently runs without a setting it asked for.
    """
    for dotted in keys:
        table, key = dotted.split(".")
        require(protocol, dotted, (SCHEMA[table][key].default,), why)


def save_training_state(run, epoch: int, model: Model, rng: np.random.Generator, rows: list[dict]) -> None:
    """Checkpoint everything a resumed run needs to continue bit-identically: weights, optimiser, RNG, metrics.

    Arrays that live elsewhere (a GPU) come to numpy first (:meth:`Model.host`).
    """
    opt_state = model.optimizer.state_dict() if model.optimizer is not None else {}
    arrays = {f"param/{k}": v for k, v in model.host(model.params).items()}
    arrays.update({f"opt/{k}": v for k, v in model.host({k: v for k, v in opt_state.items() if k != "t"}).items()})
    run.save_checkpoint(epoch, arrays, {"rng": rng.bit_generator.state, "opt_t": opt_state.get("t", 0),
                                        "metrics": rows})
    run.write_metrics(rows)


def resume_training_state(run, model: Model, rng: np.random.Generator) -> tuple[int, list[dict]]:
    """Restore the newest checkpoint into the model's weights and optimiser and ``rng``; return (epoch, metrics rows).

    A new run writes its epoch-0 checkpoint (the initial state) and returns ``(0, [])``. The restored
    arrays are moved to where the model computes (:meth:`Model.device`).
    """
    ckpt = run.latest_checkpoint(set_aside=True)
    if ckpt is None:
        save_training_state(run, 0, model, rng, [])
        return 0, []
    epoch, arrays, state = ckpt
    model.params.update(model.device({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}))
    if model.optimizer is not None:
        model.optimizer.load_state_dict({**model.device({k[len("opt/"):]: v for k, v in arrays.items()
                                                         if k.startswith("opt/")}), "t": state["opt_t"]})
    rng.bit_generator.state = state["rng"]
    log.info("resuming %s from epoch %d", run.directory, epoch)
    return epoch, state["metrics"]


def not_finite(model: Model) -> list[str]:
    """Names of the saved state (weights, optimiser moments) that hold a NaN or an infinity.

    Every array a checkpoint would save is checked: with Adam at a huge learning rate the squared
    gradients overflow to infinity while the weights stay finite (the update is then ``m / inf = 0``),
    and such a run would otherwise finish with garbage features and a checkpoint no one can resume.
    """
    state = {f"param/{k}": v for k, v in model.host(model.params).items()}
    if model.optimizer is not None:
        state.update({f"opt/{k}": v for k, v in model.host(model.optimizer.state_dict()).items()})
    return [k for k, v in state.items()
            if np.asarray(v).dtype.kind in "fc" and not np.all(np.isfinite(np.asarray(v)))]


def raise_diverged(protocol, run, epoch: int, bad: list[str]):
    """Stop a run whose metrics or saved state are no longer finite, naming the last good checkpoint and what to change."""
    last = run.latest_checkpoint()
    kept = (f"the last good checkpoint (epoch {last[0]}) is kept in {run.directory}" if last is not None
            else f"no checkpoint of {run.directory} is intact")
    shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
    fix = f"lower [rule] lr (now {protocol.rule.lr:g})"
    if protocol.rule.optimizer == "sgd" and protocol.engine.name == "numpy":
        fix += ' or use optimizer = "adam"'
    raise TrainingDiverged(f"{protocol.name}: training diverged in epoch {epoch}: NaN or infinite values in "
                           f"{shown}; {kept}. {fix[0].upper()}{fix[1:]}.")


def probe_encoder(protocol, features: list, random_features: list, labels, train_idx, test_idx, run=None,
                  sample_ids=None, views=(None, None)):
    """Linear-probe the chosen layers, trained and (if asked) random; return (metrics rows, summary).

    With ``run``, the pooled features the probe saw are saved in ``features.npz`` (``layer<l>``, with
    ``labels`` and, if given, ``sample_ids``: each row's index in the data source's full data, see
    :attr:`~neuroplastic.data.Dataset.sample_ids`), so comparisons between runs (CKA) need no
    recomputation and pair the rows of two runs by sample, whatever ``[data] max_samples`` subset each
    kept. With ``[evaluate] folds`` >= 2 the trained and the random encoder are cross-validated on the
    same folds, drawn from a child of the probe stream (k = 2), so they are independent of the split
    and of training. ``views``: the trained and the random encoder's :meth:`Engine.probe_views`, which an
    augmented Adam probe (``[evaluate] probe_augment``) trains on.
    """
    ev = protocol.evaluate
    layers = chosen_layers(ev.layers, len(features))
    folds_seq, probe_seq = seed_sequence(protocol, 2).spawn(2)      # spawn(2)[0] is spawn(1)[0]: folds as before
    fold_seed = int(folds_seq.generate_state(1)[0])
    settings = ProbeSettings.of(ev, int(probe_seq.generate_state(1)[0]))   # the same for trained and random
    probe = probe_layers(features, labels, train_idx, test_idx, layers, ev.pooling, ev.C, ev.folds,
                         fold_seed, settings, views=views[0])
    rows = [dict(epoch=protocol.train.epochs, stage="probe", layer=l, name="accuracy", value=a)
            for l, a in probe.items()]
    summary = {"probe": {str(l): a for l, a in probe.items()}}
    if random_features is not None:
        base = probe_layers(random_features, labels, train_idx, test_idx, layers, ev.pooling, ev.C, ev.folds,
                            fold_seed, settings, views=views[1])
        rows += [dict(epoch=0, stage="probe_random", layer=l, name="accuracy", value=a) for l, a in base.items()]
        summary["probe_random"] = {str(l): a for l, a in base.items()}
    if run is not None:
        saved = {f"layer{l}": pool_glimpses(np.asarray(features[l - 1]), ev.pooling).astype(np.float32)
                 for l in layers}
        ids = {} if sample_ids is None else {"sample_ids": np.asarray(sample_ids, dtype=np.int64)}
        run.save_arrays("features", {**saved, "labels": np.asarray(labels), **ids})
    return rows, summary
