"""Linear probes: how linearly decodable the labels are from a layer's frozen features.

Features of a sample's glimpses are pooled (mean over glimpses, as the paper
pools over patches) before the probe: a probe on the concatenated glimpses makes
a random encoder look as good as a trained one (science page of the docs).
The read-out is a logistic regression (``[evaluate] probe = "linear"``) or, as the
papers read out, a softmax layer trained by Adam (``"adam"``, :class:`AdamProbe`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["AdamProbe", "ProbeSettings", "kfold_probe", "linear_probe", "pool_glimpses", "softmax_cross_entropy",
           "stratified_folds", "stratified_split", "validation_split"]


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is trained, beyond ``C``: ``[evaluate] probe, probe_lr, probe_epochs, probe_batch, validation``.

    ``kind`` ``"linear"``: scikit-learn's logistic regression (full batch, L2 strength ``1 / C``);
    ``"adam"``: a linear softmax layer trained by Adam on minibatches, as the papers read out.
    ``validation`` > 0 holds out that stratified fraction of the probe's training split (of each fold's
    training folds with k-fold): the Adam probe keeps its best-validation epoch, the logistic regression
    only never sees it. ``seed`` draws that split, the Adam probe's initial weights and its minibatches.
    """

    kind: str = "linear"
    lr: float = 1e-3
    epochs: int = 100
    batch: int = 256
    validation: float = 0.0
    seed: int = 0
    #: ``[evaluate] probe_augment``: the Adam probe trains on fresh views (``draw`` of :func:`linear_probe`)
    augment: bool = False

    def __post_init__(self):
        if self.kind not in ("linear", "adam"):
            raise ValueError(f"[evaluate] probe = {self.kind!r}: must be one of 'linear', 'adam'")
        if not 0 <= self.validation < 1:
            raise ValueError(f"[evaluate] validation = {self.validation!r}: must be >= 0 and < 1")
        if not (self.lr > 0 and self.epochs >= 1 and self.batch >= 1):
            raise ValueError(f"[evaluate] probe_lr, probe_epochs, probe_batch = {self.lr!r}, {self.epochs!r}, "
                             f"{self.batch!r}: must be > 0, >= 1 and >= 1")

    @classmethod
    def of(cls, evaluate, seed: int) -> "ProbeSettings":
        """The settings of a protocol's ``[evaluate]`` table (keys it does not read give their defaults)."""
        return cls(evaluate.probe, evaluate.probe_lr, evaluate.probe_epochs, evaluate.probe_batch,
                   evaluate.validation, seed, evaluate.probe_augment)


LINEAR = ProbeSettings()


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


def linear_probe(train_x, train_y, test_x, test_y, C: float = 1.0, settings: ProbeSettings = LINEAR,
                 draw: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None) -> float:
    """Test accuracy of a standardised linear read-out trained on frozen features.

    By default a multinomial logistic regression; ``settings`` chooses the Adam-trained softmax layer
    and a validation split (:class:`ProbeSettings`). ``draw(rows, rng)``, for the Adam probe, gives the
    features of fresh random views of training samples ``rows`` (row numbers of ``train_x``): it then
    trains on those, and ``train_x`` (the unaugmented views) only standardises and validates.
    """
    clf = _trained_probe(train_x, train_y, C, settings, draw)
    return float(clf.score(np.asarray(test_x, dtype=np.float64), test_y))


def kfold_probe(features, labels, folds: int, seed: int, C: float = 1.0,
                on_fold: Callable[[], object] | None = None, settings: ProbeSettings = LINEAR) -> float:
    """Stratified k-fold accuracy of :func:`linear_probe`'s classifier, pooled over the folds.

    Each sample is predicted once, by a probe fitted (and standardised) on the other folds, so the
    accuracy rests on every sample instead of one test split: a smaller standard error. ``on_fold()``
    is called after each fold (a progress line's ``advance``: a fold of a large layer takes a while).
    A validation split (``settings.validation``) is held out of each fold's training folds.
    """
    x, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    correct = 0
    for train, test in stratified_folds(labels, folds, seed):
        correct += int(np.sum(_trained_probe(x[train], labels[train], C, settings).predict(x[test]) == labels[test]))
        if on_fold is not None:
            on_fold()
    return correct / len(labels)


def _trained_probe(x, y, C: float, settings: ProbeSettings, draw=None):
    """The probe ``settings`` ask for, trained on ``(x, y)`` less its validation split; has ``predict`` and ``score``.

    ``draw(rows, rng)``: fresh views of the rows of ``x`` for an Adam probe (see :func:`linear_probe`).
    """
    if settings.kind == "linear" and settings.validation == 0:
        return _fitted_probe(x, y, C)                  # exactly the probe of earlier versions
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    split_seed, train_seed = np.random.SeedSequence(settings.seed).spawn(2)
    train, val = validation_split(y, settings.validation, split_seed)
    if settings.kind == "linear":
        return _fitted_probe(x[train], y[train], C)
    views = None if draw is None else (lambda rows, rng: draw(train[rows], rng))
    return AdamProbe(x[train], y[train], x[val], y[val], lr=settings.lr, epochs=settings.epochs,
                     batch=settings.batch, rng=np.random.default_rng(train_seed), draw=views)


def validation_split(labels, fraction: float, seed) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` of a probe's training split: :func:`stratified_split` by ``fraction``.

    ``fraction`` = 0 gives every index to ``train``. Refuses a split that leaves either part empty.
    """
    labels = np.asarray(labels)
    if fraction == 0:
        return np.arange(len(labels)), np.arange(0)
    train, val = stratified_split(labels, fraction, seed)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"[evaluate] validation = {fraction:g} of {len(labels)} training samples leaves "
                         f"{len(train)} to train on and {len(val)} to validate on; both must be > 0 "
                         "(allowed: 0 = no validation split, or a fraction in (0, 1) that leaves both non-empty)")
    return train, val


def softmax_cross_entropy(W: np.ndarray, b: np.ndarray, x: np.ndarray, t: np.ndarray):
    """Mean cross-entropy of the softmax of ``x @ W + b`` against class indices ``t``, and its gradients.

    Returns ``(loss, dW, db)``; the gradient of the mean loss with respect to the logits is
    ``(softmax - onehot) / n``.
    """
    logits = x @ W + b
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    n = len(t)
    rows = np.arange(n)
    loss = -float(log_p[rows, t].mean())
    delta = np.exp(log_p)
    delta[rows, t] -= 1.0
    delta /= n
    return loss, x.T @ delta, delta.sum(axis=0)


class AdamProbe:
    """A linear softmax layer on standardised features, trained by Adam on minibatches (the papers' read-out).

    Full-softmax cross-entropy, Adam (beta 0.9, 0.999, eps 1e-8), ``epochs`` passes over ``(x, y)`` in
    shuffled minibatches of ``batch``; weights start uniform in +-1/sqrt(features) like a fresh
    ``torch.nn.Linear``. With a validation set (``val_x``, ``val_y`` non-empty), the accuracy on it after
    each epoch is recorded in :attr:`curve` and the weights of the best epoch (the first, on ties) are
    kept: :attr:`epoch`. Without, the last epoch's weights are kept. Deterministic given ``rng``.

    With ``draw``, each minibatch trains on ``draw(rows, rng)``, the features of fresh random views of
    those rows of ``x`` (the papers' augmented read-out); ``x`` itself, the unaugmented features, sets
    the standardisation. :attr:`losses` are then the views' losses.
    """

    def __init__(self, x, y, val_x=None, val_y=None, *, lr: float = 1e-3, epochs: int = 100, batch: int = 256,
                 rng: np.random.Generator | None = None, draw=None):
        rng = np.random.default_rng(0) if rng is None else rng
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
        self.classes = np.unique(y)
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 10 * np.finfo(np.float64).eps * np.maximum(np.abs(self.mean), 1), scale, 1.0)
        z, t = self._standard(x), np.searchsorted(self.classes, y)
        n, d, k = len(z), z.shape[1], len(self.classes)
        bound = 1 / np.sqrt(max(d, 1))
        W, b = rng.uniform(-bound, bound, (d, k)), rng.uniform(-bound, bound, k)
        state = [np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)]
        has_val = val_x is not None and len(val_x) > 0
        if has_val:
            val_z, val_y = self._standard(np.asarray(val_x, dtype=np.float64)), np.asarray(val_y)
        self.curve: list[float] = []
        self.losses: list[float] = []
        self.W, self.b, self.epoch = W.copy(), b.copy(), epochs
        best, step = -1.0, 0
        for epoch in range(1, epochs + 1):
            order, total = rng.permutation(n), 0.0
            for start in range(0, n, batch):
                rows = order[start:start + batch]
                zb = z[rows] if draw is None else self._standard(np.asarray(draw(rows, rng), dtype=np.float64))
                loss, dW, db = softmax_cross_entropy(W, b, zb, t[rows])
                total += loss * len(rows)
                step += 1
                for param, grad, m, v in ((W, dW, state[0], state[1]), (b, db, state[2], state[3])):
                    m *= 0.9
                    m += 0.1 * grad
                    v *= 0.999
                    v += 0.001 * grad * grad
                    param -= lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
            self.losses.append(total / n)
            if has_val:
                acc = float(np.mean(self.classes[np.argmax(val_z @ W + b, axis=1)] == val_y))
                self.curve.append(acc)
                if acc > best:
                    best, self.W, self.b, self.epoch = acc, W.copy(), b.copy(), epoch
        if not has_val:
            self.W, self.b = W, b

    def _standard(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale

    def predict(self, x) -> np.ndarray:
        """The class of each row of ``x``."""
        z = self._standard(np.asarray(x, dtype=np.float64))
        return self.classes[np.argmax(z @ self.W + self.b, axis=1)]

    def score(self, x, y) -> float:
        """Accuracy on ``(x, y)``."""
        return float(np.mean(self.predict(x) == np.asarray(y)))


def _fitted_probe(x, y, C: float):
    """The logistic-regression probe: standardised features, multinomial logistic regression, fitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence chatter on dead (all-zero) features
        clf.fit(np.asarray(x, dtype=np.float64), y)
    return clf
