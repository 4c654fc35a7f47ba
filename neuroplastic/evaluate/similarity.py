"""Representational similarity of two sets of features of the same samples: linear CKA.

How alike two networks (rate and spiking, two seeds, two rules) represent the same inputs,
invariant to rotations and isotropic scaling of either representation.
"""
from __future__ import annotations

import numpy as np

__all__ = ["correlation", "linear_cka"]


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same samples (rows).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))
    >>> round(linear_cka(x, 3 * x @ q), 6)       # invariant to rotations and isotropic scaling
    1.0
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same samples: {len(x)} vs {len(y)} rows")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denom) if denom > 0 else float("nan")


def correlation(a, b) -> float:
    """Pearson correlation of two arrays of one shape (e.g. two weight changes); NaN when either is missing,
    constant, or the shapes differ."""
    if a is None or b is None or np.shape(a) != np.shape(b):
        return float("nan")
    with np.errstate(all="ignore"):                                  # a constant array has no correlation: NaN
        return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])
