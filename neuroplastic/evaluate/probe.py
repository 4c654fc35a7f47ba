"""Linear probes: how linearly decodable the labels are from a layer's frozen features.

Features of a sample's glimpses are pooled (mean over glimpses, as the paper
pools over patches) before the probe: a probe on the concatenated glimpses makes
a random encoder look as good as a trained one (science page of the docs).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["kfold_probe", "linear_probe", "pool_glimpses", "stratified_folds", "stratified_split"]


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


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` indices of each of ``folds`` stratified folds; the test parts partition the samples."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    smallest = int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0
    if not 2 <= folds <= smallest:
        raise ValueError(f"folds = {folds}: must be 2 to the smallest class's size ({smallest})")
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(split.split(np.zeros((len(labels), 1)), labels))


def linear_probe(train_x, train_y, test_x, test_y, C: float = 1.0) -> float:
    """Test accuracy of a standardised multinomial logistic regression trained on frozen features."""
    clf = _fitted_probe(train_x, train_y, C)
    return float(clf.score(np.asarray(test_x, dtype=np.float64), test_y))


def kfold_probe(features, labels, folds: int, seed: int, C: float = 1.0) -> float:
    """Stratified k-fold accuracy of :func:`linear_probe`'s classifier, pooled over the folds.

    Each sample is predicted once, by a probe fitted (and standardised) on the other folds, so the
    accuracy rests on every sample instead of one test split: a smaller standard error.
    """
    x, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    correct = 0
    for train, test in stratified_folds(labels, folds, seed):
        correct += int(np.sum(_fitted_probe(x[train], labels[train], C).predict(x[test]) == labels[test]))
    return correct / len(labels)


def _fitted_probe(x, y, C: float):
    """The probe every accuracy here uses: standardised features, multinomial logistic regression, fitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence chatter on dead (all-zero) features
        clf.fit(np.asarray(x, dtype=np.float64), y)
    return clf
