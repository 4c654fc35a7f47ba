"""Registry of simulation engines: a protocol's ``[engine] name`` picks one.

Each entry names a module with ``train(protocol, run, progress=True, prepared=None) -> dict``:
train, evaluate, write into ``run`` and return the summary. ``prepared`` is what
:func:`prepare` returned (the data every engine needs, loaded before the run directory exists).

Modules are imported only when used, so choosing the numpy engine never imports Brian2.
"""
import importlib

import numpy as np

ENGINES = {
    "numpy": "neuroplastic.rate.engine",
}


def get_engine(name: str):
    """Return the engine module for ``name``; an unknown name lists the known ones."""
    try:
        return importlib.import_module(ENGINES[name])
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}") from None


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def seed_sequence(protocol, stream: int) -> np.random.SeedSequence:
    """Independent random stream ``stream`` of a protocol's seed: 0 weights, 1 training, 2 probe split."""
    return np.random.SeedSequence([protocol.seed, stream])


def prepare(protocol):
    """Load the data, cut glimpses and split train/test: what every engine needs before training.

    The command line calls this before it creates the run directory, so input errors that only
    show with the data (e.g. a patch larger than the images) raise :class:`ProtocolError` and
    leave nothing behind; pass the result to the engine's ``train`` as ``prepared``.
    Returns ``(dataset, glimpse_grid, train_indices, test_indices)``.
    """
    from . import data as datasets
    from .evaluate import stratified_split
    from .models import load_model
    from .protocol import ProtocolError
    from .stimuli import glimpse_grid

    load_model(protocol.model_path, kind="neuron").variant(protocol.engine.variant)   # checks the model file
    ds = datasets.load(protocol.data.source, protocol.data.max_samples, seed=protocol.seed)
    st = protocol.stimulus
    try:
        grid = glimpse_grid(ds.images, st.patch, st.stride, st.scan)
    except ValueError as err:
        raise ProtocolError(str(protocol.source), "", str(err)) from None
    train_idx, test_idx = stratified_split(ds.labels, protocol.data.test_fraction, seed=seed_sequence(protocol, 2))
    return ds, grid, train_idx, test_idx
