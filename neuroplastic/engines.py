"""Registry of simulation engines: a protocol's ``[engine] name`` picks one.

Each entry names a module with two functions:

- ``prepare(protocol)``: load data and check everything that needs it, before any run directory
  exists (raises :class:`~neuroplastic.protocol.ProtocolError` on bad input);
- ``train(protocol, run, progress=True, prepared=None) -> dict``: train, evaluate, write into
  ``run`` and return the summary.

Modules are imported only when used, so choosing the numpy engine never imports Brian2.
"""
import importlib

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
