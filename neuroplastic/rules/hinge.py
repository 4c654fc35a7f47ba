r"""The contrastive hinge loss of Tang, Yang & Amit (2022) on L1 distances, with its explicit gradient.

Rows ``a`` of ``e1`` and ``e2`` (N, m) are the head outputs of two views of the
same N images. Their L1 distance is

.. math::

    D_{ab} = \sum_k |e1_{ak} - e2_{bk}|

A positive pair (two views of one image, ``b = a``) is pulled below ``tau - delta``,
a negative pair (views of two images) pushed above ``tau + delta``:

.. math::

    L = \frac{1}{N}\Big[\sum_a \max(0,\, D_{aa} - (\tau - \Delta))
        + w \sum_{s=1}^{k}\sum_a \max(0,\, (\tau + \Delta) - D_{a,\,a+s \bmod N})\Big]

The negatives of image ``a`` are the images ``a + 1, ..., a + k`` of the batch
(cyclically): the first ``k`` off-diagonals of the distance matrix, the
authors' "fewer negatives"; ``k >= N - 1`` takes every other image. (Their code
does not wrap around the batch, so its last rows have fewer negatives; the batch
order is random either way.) Each negative pair weighs ``w`` against a positive: by default
``w = 1/k``, so that an image's negatives weigh as much as its positive, whatever ``k``; the
authors' ``future = 5`` weighs each of its 4 negatives ``w = 1/5``.

Only view 2 learns: the gradient through view 1 is blocked (the authors'
``detach``), so view 1 is a target, as a teacher signal would be. With
:math:`C_{ab} = \partial L / \partial D_{ab}`,

.. math::

    \frac{\partial L}{\partial e2_{b}} = \sum_a C_{ab}\, \mathrm{sign}(e2_b - e1_a),\qquad
    C_{aa} = \tfrac{1}{N}\,\Theta(D_{aa} - \tau + \Delta),\quad
    C_{a,a+s} = -\tfrac{w}{N}\,\Theta(\tau + \Delta - D_{a,a+s})

No division by a norm, no inner product: only distances, thresholds and signs.

The loss is not scale-free: L1 distances grow with the scale of the head's
outputs, so ``tau`` must be comparable to the distances the network starts
with. Far below them, the cheapest way to pull positives under ``tau - delta``
is to silence units (on digits with ``tau = 2``, most ReLU units of layer 2 died).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace
from array_api_compat import device as array_device

__all__ = ["HingeResult", "hinge_views"]


class HingeResult(NamedTuple):
    """``loss`` (scalar), ``grad`` = dL/de2 (N, m), and ``active``: fraction of hinge terms with a
    non-zero gradient (positives and negatives together), the analogue of CLAPP's modulated pairs.

    ``loss`` and ``active`` are 0-d float64 arrays of the embeddings' namespace and device: on a GPU,
    reading them (``float()``) waits for the device, so a learner reads a batch's metrics at once
    (:func:`~neuroplastic.engines.numpy.backend.host_floats`)."""

    loss: Any
    grad: Any           # an array of the embeddings' namespace and device
    active: Any


def hinge_views(e1, e2, tau: float = 2.0, delta: float = 1.0,
                negatives: int | None = None, negative_weight: float = 0.0) -> HingeResult:
    """Contrastive L1 hinge loss of two views and its gradient with respect to view 2.

    Parameters
    ----------
    e1, e2 : arrays (N, m)
        Embeddings of view 1 (held constant) and view 2 of the same N images, of one namespace and
        device (numpy, torch, CuPy); the gradient, the loss and the fraction come back in it.
    tau, delta : float
        Threshold and margin: positives are penalised above ``tau - delta``,
        negatives below ``tau + delta``.
    negatives : int, optional
        Number ``k`` of negatives per image (the first k cyclic off-diagonals);
        ``None`` or ``>= N - 1``: every other image of the batch.
    negative_weight : float
        Weight ``w`` of each negative pair against a positive; 0 (the default): ``1/k``.
    """
    xp = array_namespace(e1, e2)
    dev = array_device(e2)
    N = e1.shape[0]
    if N < 2:
        raise ValueError("the hinge loss needs at least 2 images: the negatives are the other images")
    k = N - 1 if negatives is None else min(int(negatives), N - 1)
    w = negative_weight if negative_weight > 0 else 1.0 / k
    shifts = xp.arange(k + 1, device=dev)              # s = 0: the positive; s >= 1: off-diagonal s
    anchors = xp.arange(N, device=dev)[:, None]
    partner = (anchors + shifts) % N                   # (N, k + 1): image paired with anchor a in column s
    diff = e2[partner] - e1[:, None, :]                # (N, k + 1, m)
    d = xp.sum(xp.abs(diff), axis=2)                   # D[a, a + s]
    lo, hi = tau - delta, tau + delta
    pos, neg = d[:, :1] - lo, hi - d[:, 1:]
    terms = xp.concat([xp.maximum(pos, xp.zeros_like(pos)), xp.maximum(neg, xp.zeros_like(neg)) * w], axis=1)
    # the coefficients in float64 whatever the embeddings' dtype (a bool / int is float64 in numpy, not in torch)
    coef = xp.concat([xp.astype(d[:, :1] > lo, xp.float64) / N, xp.astype(d[:, 1:] < hi, xp.float64) * (-w / N)],
                     axis=1)
    coef = xp.astype(coef, e2.dtype)
    g = coef[:, :, None] * xp.sign(diff)               # dL/de2 of the partner, in the anchor's row
    source = (anchors - shifts) % N                    # anchor whose column s holds image b as partner
    grad = xp.sum(g[source, shifts], axis=1)           # back to the partner's own row
    # divided by a 0-d array of the same device: torch divides by a Python number as a product with its
    # reciprocal on CUDA, which rounds 7 / 12 one ulp off the exact quotient that numpy and CuPy give
    terms_n = xp.asarray(float(N * (k + 1)), dtype=xp.float64, device=array_device(coef))
    active = xp.astype(xp.count_nonzero(coef), xp.float64) / terms_n
    return HingeResult(xp.sum(terms, dtype=xp.float64) / N, grad, active)
