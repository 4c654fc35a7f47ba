"""Registry of simulation engines: a protocol's ``[engine] name`` picks one.

Each entry names a module with ``check(protocol, running=True)`` (reject settings the engine cannot
run, with a ProtocolError or a DeviceError) and ``train(protocol, run, progress=True, prepared=None) -> dict`` (train, evaluate,
write into ``run`` and return the summary). ``prepared`` is what
:func:`prepare` returned (the data every engine needs, loaded before the run directory exists).

Modules are imported only when used, so choosing the numpy engine never imports Brian2.
"""
import importlib
import logging
from typing import NamedTuple

import numpy as np

from .errors import TrainingDiverged

log = logging.getLogger(__name__)

ENGINES = {
    "numpy": "neuroplastic.rate.engine",
    "brian": "neuroplastic.brian.engine",
}


def get_engine(name: str):
    """Return the engine module for ``name``; an unknown name lists the known ones."""
    try:
        return importlib.import_module(ENGINES[name])
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}") from None




def seed_sequence(protocol, stream: int) -> np.random.SeedSequence:
    """Independent random stream ``stream`` of a protocol's seed: 0 weights, 1 training, 2 probe split."""
    return np.random.SeedSequence([protocol.seed, stream])


def require_defaults(protocol, keys: list[str], why: str) -> None:
    """Refuse settings an engine (or rule) does not use: each ``table.key`` must keep its default.

    The error names the key, the value given, the allowed value and ``why``, so a protocol never
    silently runs without a setting it asked for.
    """
    from .protocol import SCHEMA, ProtocolError

    for dotted in keys:
        table, key = dotted.split(".")
        value, default = getattr(getattr(protocol, table), key), SCHEMA[table][key].default
        if value != default:
            raise ProtocolError(protocol.source, dotted, f"= {value!r}: {why}; allowed: {default!r}")


class Prepared(NamedTuple):
    """What every engine needs before training: the data, its stimulus, the split, and the probe's data.

    ``stimulus`` is a :class:`~neuroplastic.stimuli.GlimpseGrid` (dense glimpse sequences), a
    :class:`~neuroplastic.stimuli.PatchGrids` (conv CLAPP, cut batch by batch) or ``None`` (hinge
    rules, which see whole images). ``probe`` is ``None`` when the probe is trained and tested on
    held-out parts of the training data (``train_idx``/``test_idx``); otherwise the probe has its own
    data (``[evaluate] source/split``), and the encoder trains on every sample of ``dataset``.
    """

    dataset: object
    stimulus: object
    train_idx: np.ndarray
    test_idx: np.ndarray
    probe: "Prepared | None" = None

    def probe_set(self) -> "Prepared":
        """The data the probe is trained and tested on (``self`` unless the probe has its own)."""
        return self.probe if self.probe is not None else self


def prepare(protocol, running: bool = True) -> Prepared:
    """Load the data, make its stimulus and split train/test: what every engine needs before training.

    The command line calls this before it creates the run directory, so input errors that only
    show with the data (e.g. a patch larger than the images) raise :class:`ProtocolError` and
    leave nothing behind; pass the result to the engine's ``train`` as ``prepared``.
    ``running=False`` prepares a build that will not run here (e.g. CUDA without a GPU).
    """
    from . import data as datasets
    from .models import load_model
    from .protocol import ProtocolError

    get_engine(protocol.engine.name).check(protocol, running=running)
    load_model(protocol.model_path, kind="neuron").variant(protocol.engine.variant)   # checks the model file
    d, ev = protocol.data, protocol.evaluate
    own_probe = bool(ev.source or ev.split)
    try:
        ds = datasets.load(d.source, d.path, d.split, d.label, d.max_samples, seed=protocol.seed)
        stimulus = make_stimulus(protocol, ds)
        if not own_probe:
            _check_labelled(protocol, ds, "data.split", d.split)
            return Prepared(ds, stimulus, *_split(protocol, ds.labels))
        source, path = ev.source or d.source, ev.path or d.path
        label = d.label if not ev.source else ""
        fit = datasets.load(source, path, ev.split, label, seed=protocol.seed)
        if tuple(fit.samples.shape[1:]) != tuple(ds.samples.shape[1:]):
            raise ProtocolError(str(protocol.source), "evaluate.source",
                                f"= {source!r}: its samples have shape {tuple(fit.samples.shape[1:])}, the training "
                                f"data's {tuple(ds.samples.shape[1:])}; the probe needs the same kind of sample")
        _check_labelled(protocol, fit, "evaluate.split", ev.split)
        if ev.test_split:
            test = datasets.load(source, path, ev.test_split, label, seed=protocol.seed)
            both = datasets.Dataset(fit.name, np.concatenate([np.asarray(fit.samples), np.asarray(test.samples)]),
                                    np.concatenate([fit.labels, test.labels]), fit.classes, fit.domain, fit.rate)
            probe = Prepared(both, make_stimulus(protocol, both), np.arange(len(fit)),
                             np.arange(len(fit), len(both)))
        else:
            probe = Prepared(fit, make_stimulus(protocol, fit), *_split(protocol, fit.labels))
    except (datasets.DataError, ProtocolError):
        raise
    except ValueError as err:
        raise ProtocolError(str(protocol.source), "", str(err)) from None
    return Prepared(ds, stimulus, np.arange(len(ds)), np.arange(0), probe)


def make_stimulus(protocol, dataset):
    """A data set's stimulus under ``[stimulus]`` and ``[model] arch`` (see :class:`Prepared`)."""
    from .stimuli import PatchGrids, glimpse_sequences

    from .protocol import ProtocolError

    st = protocol.stimulus
    if st.kind == "views":
        return None
    if protocol.model.arch == "dense":
        return glimpse_sequences(dataset, st)
    grids = PatchGrids(dataset.samples, st.patch, st.stride, st.crop, dtype=protocol.engine.dtype)
    rows, offsets = grids.grid_shape[0], protocol.rule.offsets
    if max(offsets) >= rows:
        raise ProtocolError(protocol.source, "rule.offsets", f"= {offsets}: the patch grid has {rows} rows, so a "
                            f"patch can predict at most {rows - 1} rows below it")
    return grids


def _check_labelled(protocol, ds, key: str, split: str) -> None:
    from .protocol import ProtocolError

    if len(np.unique(ds.labels[ds.labels >= 0])) < 2:
        hint = "; or probe on a labelled split with [evaluate] split" if key == "data.split" else ""
        raise ProtocolError(str(protocol.source), key, f"= {ds.name} {split or 'default'!r}: fewer than "
                            "two labelled classes, so the linear probe has nothing to decode; use a labelled "
                            f"split (see `neuroplastic list`){hint}")


def _split(protocol, labels) -> tuple[np.ndarray, np.ndarray]:
    from .evaluate import stratified_split

    return stratified_split(labels, protocol.data.test_fraction, seed=seed_sequence(protocol, 2))


def save_training_state(run, epoch: int, params: dict, rng: np.random.Generator, rows: list[dict],
                        optimizer=None) -> None:
    """Checkpoint everything a resumed run needs to continue bit-identically: weights, optimiser, RNG, metrics."""
    opt_state = optimizer.state_dict() if optimizer is not None else {}
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"opt/{k}": v for k, v in opt_state.items() if k != "t"})
    run.save_checkpoint(epoch, arrays, {"rng": rng.bit_generator.state, "opt_t": opt_state.get("t", 0),
                                        "metrics": rows})
    run.write_metrics(rows)


def resume_training_state(run, params: dict, rng: np.random.Generator, optimizer=None) -> tuple[int, list[dict]]:
    """Restore the newest checkpoint into ``params``, ``rng`` and ``optimizer``; return (epoch, metrics rows).

    A new run writes its epoch-0 checkpoint (the initial state) and returns ``(0, [])``.
    """
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        save_training_state(run, 0, params, rng, [], optimizer)
        return 0, []
    epoch, arrays, state = ckpt
    params.update({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
    if optimizer is not None:
        optimizer.load_state_dict({**{k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")},
                                   "t": state["opt_t"]})
    rng.bit_generator.state = state["rng"]
    log.info("resuming %s from epoch %d", run.directory, epoch)
    return epoch, state["metrics"]


def raise_diverged(protocol, run, epoch: int, losses, params: dict):
    """Stop a run whose loss is no longer finite, naming the last good checkpoint and what to change."""
    bad = [l + 1 for l, v in enumerate(losses) if not np.isfinite(v)] or \
          [k for k, v in params.items() if not np.all(np.isfinite(v))]
    last = run.latest_checkpoint()[0]
    raise TrainingDiverged(
        f"{protocol.name}: the loss became NaN or infinite in epoch {epoch} (layers/weights {bad}); "
        f"the last good checkpoint (epoch {last}) is kept in {run.directory}. "
        f"Lower [rule] lr (now {protocol.rule.lr:g}) or use optimizer = \"adam\".")


def probe_encoder(protocol, features: list, random_features: list, labels, train_idx, test_idx, run=None):
    """Linear-probe the chosen layers, trained and (if asked) random; return (metrics rows, summary).

    With ``run``, the pooled features the probe saw are saved in ``features.npz`` (``layer<l>``, with
    ``labels``), so comparisons between runs (CKA) need no recomputation.
    """
    from .evaluate import chosen_layers, pool_glimpses, probe_layers

    ev = protocol.evaluate
    layers = chosen_layers(ev.layers, len(features))
    probe = probe_layers(features, labels, train_idx, test_idx, layers, ev.pooling, ev.C)
    rows = [dict(epoch=protocol.train.epochs, stage="probe", layer=l, name="accuracy", value=a)
            for l, a in probe.items()]
    summary = {"probe": {str(l): a for l, a in probe.items()}}
    if ev.baseline:
        base = probe_layers(random_features, labels, train_idx, test_idx, layers, ev.pooling, ev.C)
        rows += [dict(epoch=0, stage="probe_random", layer=l, name="accuracy", value=a) for l, a in base.items()]
        summary["probe_random"] = {str(l): a for l, a in base.items()}
    if run is not None:
        saved = {f"layer{l}": pool_glimpses(np.asarray(features[l - 1]), ev.pooling).astype(np.float32)
                 for l in layers}
        run.save_arrays("features", {**saved, "labels": np.asarray(labels)})
    return rows, summary
