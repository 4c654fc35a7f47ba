"""neuroplastic: local, self-supervised plasticity rules in rate and spiking networks.

See README.md for a tour; the science is in the docstrings of :mod:`neuroplastic.rules`. The Python
API (:mod:`neuroplastic.api`) is exported here: :func:`~neuroplastic.api.load_protocol`,
:func:`~neuroplastic.api.run`, :func:`~neuroplastic.api.load_run`, :class:`~neuroplastic.api.Result`
and :func:`~neuroplastic.api.train_clapp`. They are imported on first use, so ``import neuroplastic``
(and the command line's start) does not load numpy, scikit-learn or Brian2.
"""
__version__ = "0.1.0"

__all__ = ["ClappFit", "Result", "load_protocol", "load_run", "run", "train_clapp"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
