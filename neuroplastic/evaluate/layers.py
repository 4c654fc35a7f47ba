"""Probe every chosen layer of an encoder, trained and random, from arrays of glimpse features."""
from __future__ import annotations

import logging

import numpy as np

from ..progress import phase
from .probe import LINEAR, ProbeSettings, kfold_probe, linear_probe, pool_glimpses

__all__ = ["probe_layers", "chosen_layers"]

log = logging.getLogger(__name__)


def chosen_layers(setting, n_layers: int) -> list[int]:
    """1-based layer numbers from ``[evaluate] layers`` (``"all"`` or a list)."""
    return list(range(1, n_layers + 1)) if setting == "all" else sorted(set(setting))


def probe_layers(features: list[np.ndarray], labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 layers: list[int], pooling: str = "mean", C: float = 1.0, folds: int = 0,
                 seed: int = 0, settings: ProbeSettings = LINEAR, views=None) -> dict[int, float]:
    """Linear-probe accuracy of each layer; ``features[l - 1]`` is layer l's (n, T, f) glimpse features.

    ``folds`` = 0 fits on ``train`` and tests on ``test``; ``folds`` >= 2 cross-validates over the samples
    of both (:func:`~neuroplastic.evaluate.probe.kfold_probe`), with the same folds for every layer and
    for any features given the same labels and ``seed``. ``settings`` choose the read-out and its
    validation split (:class:`~neuroplastic.evaluate.probe.ProbeSettings`), the same for every layer.
    ``views(idx, rng)`` (an engine's :meth:`~neuroplastic.engines.base.Engine.probe_views`, ``folds`` = 0):
    every layer's features of fresh random views of samples ``idx``, which an augmented Adam probe
    (``settings.augment``) trains on.
    """
    labels = np.asarray(labels)
    both = np.union1d(train, test).astype(np.int64)
    out = {}
    for layer in layers:                 # with folds, the status line counts the folds done: "(5 folds): 2/5"
        with phase(f"linear probe layer {layer}" + (f" ({folds} folds)" if folds else ""), total=folds or None,
                   unit="fold", logger=log) as advance:
            f = pool_glimpses(np.asarray(features[layer - 1]), pooling)
            draw = None
            if settings.augment and views is not None:
                def draw(rows, rng, layer=layer):          # rows of the training split -> pooled view features
                    return pool_glimpses(np.asarray(views(train[rows], rng)[layer - 1]), pooling)
            out[layer] = (kfold_probe(f[both], labels[both], folds, seed, C=C, on_fold=advance, settings=settings)
                          if folds else linear_probe(f[train], labels[train], f[test], labels[test], C=C,
                                                     settings=settings, draw=draw))
    return out
