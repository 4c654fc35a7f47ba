"""Linear probes: how linearly decodable the labels are from a layer's frozen features.

Features of a sample's glimpses are pooled (mean over glimpses, as the paper
pools over patches) before the probe: a probe on the concatenated glimpses makes
a random encoder look as good as a trained one (science page of the docs).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["linear_probe", "pool_glimpses", "stratified_split"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def pool_glimpses(features: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """(n, T, f) glimpse features -> (n, f) by ``mean`` or (n, T * f) by ``concat``."""
    if pooling == "mean":
        return features.mean(axis=1)
    if pooling == "concat":
        return features.reshape(len(features), -1)
    raise ValueError(f"unknown pooling {pooling!r}; known: 'mean', 'concat'")


def linear_probe(train_x, train_y, test_x, test_y, C: float = 1.0) -> float:
    """Test accuracy of a standardised multinomial logistic regression trained on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence chatter on dead (all-zero) features
        clf.fit(np.asarray(train_x, dtype=np.float64), train_y)
    return float(clf.score(np.asarray(test_x, dtype=np.float64), test_y))
