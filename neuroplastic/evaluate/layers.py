"""Probe every chosen layer of an encoder, trained and random, from arrays of glimpse features."""
from __future__ import annotations

import numpy as np

from .probe import linear_probe, pool_glimpses

__all__ = ["probe_layers", "chosen_layers"]


def chosen_layers(setting, n_layers: int) -> list[int]:
    """1-based layer numbers from ``[evaluate] layers`` (``"all"`` or a list)."""
    return list(range(1, n_layers + 1)) if setting == "all" else sorted(set(setting))


def probe_layers(features: list[np.ndarray], labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 layers: list[int], pooling: str = "mean", C: float = 1.0) -> dict[int, float]:
    """Linear-probe accuracy of each layer; ``features[l - 1]`` is layer l's (n, T, f) glimpse features."""
    out = {}
    for layer in layers:
        f = pool_glimpses(np.asarray(features[layer - 1]), pooling)
        out[layer] = linear_probe(f[train], labels[train], f[test], labels[test], C=C)
    return out
