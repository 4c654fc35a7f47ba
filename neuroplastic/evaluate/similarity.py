"""Representational similarity of two sets of features of the same samples: linear CKA.

How alike two networks (rate and spiking, two seeds, two rules) represent the same inputs,
invariant to rotations and isotropic scaling of either representation.

**Paired by sample.** Two runs with ``[data] max_samples`` keep different random subsets when their
seeds differ, so row i of one run's features is not row i of the other's. Every run saves which
sample of the data source each row is (``sample_ids`` in ``features.npz``): :func:`sample_ids` reads
them, :func:`pair_samples` gives the rows of the samples both runs probed, in one order, or none
when they share fewer than :data:`MIN_SHARED`. ``neuroplastic compare`` and the figures pair by it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MIN_SHARED", "correlation", "linear_cka", "pair_samples", "paired_rows", "sample_ids"]

#: Fewest samples two runs must both have probed for a paired measure (CKA) to be given: below it, NaN.
#: CKA of a handful of samples is biased towards 1 (the centred Gram matrices of a few samples in many
#: dimensions all look alike), so a small overlap would report similarity that is not there.
MIN_SHARED = 10


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


def sample_ids(features: dict[str, np.ndarray], protocol: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """Which sample of the data source each row of a run's saved ``features`` is, or ``None`` and why not.

    ``protocol`` is the run's resolved protocol (its manifest's ``protocol``). Saved ``sample_ids`` are
    used as they are. A run that saved none (older runs) is paired only if it probed its data whole (no
    ``[data] max_samples`` subset, or a probe with its own data, which is never subsampled): its rows
    are then the samples in the source's order.
    """
    rows = next((len(v) for k, v in features.items() if k.startswith("layer")), None)
    if rows is None:
        return None, "it saved no probe features (features.npz)"
    if "sample_ids" in features:
        ids = np.asarray(features["sample_ids"])
        if ids.ndim == 1 and len(ids) == rows and len(np.unique(ids)) == rows:
            return ids, ""
        return None, "its features.npz holds sample_ids that do not match its rows (damaged)"
    data, evaluate = protocol.get("data") or {}, protocol.get("evaluate") or {}
    try:
        kept = float(data.get("max_samples") or 0)
    except (TypeError, ValueError):
        kept = 0.0
    kept = int(kept) if math.isfinite(kept) else 0
    if evaluate.get("source") or evaluate.get("split") or kept == 0 or rows < kept:
        return np.arange(rows), ""
    return None, (f"it saved no sample ids (made before runs saved them) and probed a random subset "
                  f"([data] max_samples = {kept}), so its rows cannot be matched to another run's samples")


def paired_rows(ids: np.ndarray, ref_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(i, j)`` such that ``ids[i] == ref_ids[j]``: the samples both runs probed, by increasing id."""
    _, i, j = np.intersect1d(ids, ref_ids, assume_unique=True, return_indices=True)
    return i, j


def pair_samples(ids: np.ndarray, ref_ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """``(rows of ids, rows of ref_ids, shared samples)`` for a paired measure; the rows are ``None`` when
    fewer than :data:`MIN_SHARED` samples are shared (the measure is then not given).

    Examples
    --------
    >>> i, j, n = pair_samples(np.array([7, 3, 5] + list(range(10, 20))), np.arange(20)[::-1])
    >>> n, bool(np.all(np.r_[7, 3, 5, 10:20][i] == np.arange(20)[::-1][j]))
    (13, True)
    >>> pair_samples(np.arange(9), np.arange(20))[:2]
    (None, None)
    """
    i, j = paired_rows(ids, ref_ids)
    return (None, None, len(i)) if len(i) < MIN_SHARED else (i, j, len(i))
