r"""CLAPP and CLAPP-s: the layer-local rule of Illing et al. (NeurIPS 2021), as plain functions on arrays.

One layer with input ``x``, feed-forward weights ``W`` (n_out, n_in), prediction
weights ``W_pred`` (n_out, n_out) and, for CLAPP, retrodiction weights
``W_retro`` (n_out, n_out).  Rows of the arrays are independent pairs
(current glimpse, previous glimpse), e.g. batch x time steps:

.. math::

    a = W x,\quad z = \rho(a),\quad c = \rho(W x^{t-\delta t}),\quad d = W_{pred}\, c

    u = z^\top d,\qquad L = \max(0,\, 1 - y u),\qquad \gamma = y\,\Theta(1 - y u)

    \Delta W_{pred} = \eta\,\gamma\, z c^\top

    \Delta W = \eta\,\gamma\,[(d \odot \rho'(a))\, x^\top + (r \odot \rho'(a^{t-\delta t}))\, x^{t-\delta t\,\top}]

with the retrodiction ``r = W_pred^T z`` (CLAPP-s, this is exactly
:math:`-\eta\,\partial L/\partial W`).

CLAPP replaces ``W_pred^T`` by a separate, independently initialised matrix
``W_retro`` with its own score and gate, as the authors' ``--asymmetric_W_pred``
does: the prediction pathway scores ``u`` with the context held fixed, the
retrodiction pathway scores the same pair the other way round with the current
rate held fixed,

.. math::

    r = W_{retro}\, z,\qquad u_r = c^\top r,\qquad \gamma_r = y\,\Theta(1 - y u_r),\qquad
    L = \max(0, 1 - y u)\big|_{c\ \mathrm{fixed}} + \max(0, 1 - y u_r)\big|_{z\ \mathrm{fixed}}

    \Delta W = \eta\,[\gamma\,(d \odot \rho'(a))\, x^\top + \gamma_r\,(r \odot \rho'(a^{t-\delta t}))\,
    x^{t-\delta t\,\top}],\qquad \Delta W_{retro} = \eta\,\gamma_r\, c z^\top

so no synapse ever reads the transpose of another: the weight-transport problem
is avoided, and ``W_retro`` tracks ``W_pred^T`` only as far as the two scores
agree.

The functions return *gradients* (:math:`\partial L/\partial\theta`, averaged
over rows) so that any optimiser (SGD, Adam) applies them; the Hebbian update of
the paper is ``-lr * grad``.  They are written against the array API standard
(numpy by default; torch or CuPy arrays work unchanged).  Nothing here imports
an engine.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .retinotopic import Layout, dense_layouts, init_layout_params

__all__ = ["LayerForward", "ClappGrads", "relu", "relu_prime", "forward", "clapp_pairs", "clapp_sequences",
           "init_dense_params", "retro_distance", "stack_rates"]


def relu(a):
    """rho(a) = max(a, 0), the somatic nonlinearity of the rate model."""
    return array_namespace(a).maximum(a, 0.0)


def relu_prime(a):
    """rho'(a) = Theta(a), taken as 0 at a = 0 (as autograd does)."""
    xp = array_namespace(a)
    return xp.astype(a > 0, a.dtype)


class LayerForward(NamedTuple):
    """Somatic drive ``a`` and rate ``z = rho(a)`` of a layer for a block of glimpses."""

    a: object
    z: object


def forward(W, x) -> LayerForward:
    """Soma of a dense layer: ``a = x W^T`` for rows ``x`` (..., n_in)."""
    a = _rows(x) @ W.T
    if x.ndim != 2:
        a = array_namespace(a).reshape(a, (*x.shape[:-1], W.shape[0]))
    return LayerForward(a, relu(a))


class ClappGrads(NamedTuple):
    """Per-layer result of one block of pairs.

    ``loss`` is the mean hinge loss over rows (CLAPP: the sum of its two
    pathways' losses), ``gamma`` the modulation factor of each row, ``u`` the
    score of each row; ``W``, ``W_pred`` and ``W_retro`` are gradients (mean
    over rows); ``z`` is the layer's rate for the current glimpses (the next
    layer's input). ``W_retro``, ``gamma_retro`` and ``u_retro`` (the
    retrodiction pathway's gradient, gate and score) are ``None`` for CLAPP-s.
    """

    loss: object
    gamma: object
    u: object
    W: object
    W_pred: object
    W_retro: object
    z: object
    gamma_retro: object = None
    u_retro: object = None


def stack_rates(params: dict, x) -> list:
    """Rates of every layer of a dense stack (``params`` as :func:`init_dense_params` names them) for inputs ``x``."""
    out = []
    for l in range(sum(1 for k in params if k.endswith("/W"))):
        x = forward(params[f"{l + 1}/W"], x).z
        out.append(x)
    return out


def clapp_pairs(W, W_pred, x, x_prev, y, *, cur: LayerForward | None = None, prev: LayerForward | None = None,
                W_retro=None, weights=None, layout: Layout | None = None) -> ClappGrads:
    """Explicit CLAPP(-s) gradients for rows of (current, previous) glimpse pairs.

    Parameters
    ----------
    W, W_pred : arrays (n_out, n_in), (n_out, n_out)
        Feed-forward and prediction weights of the layer.
    x, x_prev : arrays (n_rows, n_in)
        Layer input at the current glimpse and one glimpse back (the context).
    y : array (n_rows,)
        +1 for a fixation (positive pair), -1 for a saccade (negative pair).
    cur, prev : LayerForward, optional
        Precomputed ``forward(W, x)`` and ``forward(W, x_prev)``; pass them
        when several pair sets share a forward pass.
    W_retro : array (n_out, n_out), optional
        CLAPP's retrodiction matrix; ``None`` selects CLAPP-s (``W_pred^T``).
    weights : array (n_rows,), optional
        Weight of each row in the mean (default ``1 / n_rows``); lets a caller
        sum a positive and several negative sets into one loss.
    layout : Layout, optional
        A retinotopic layer (:mod:`~neuroplastic.rules.retinotopic`): the gradients zero off the
        connections and, with several locations, one score and gate per location (``u``, ``gamma``
        of shape (n_rows, locations)), the loss summed over locations. ``None``: a dense layer.
    """
    xp = array_namespace(W, x)
    cur = forward(W, x) if cur is None else cur
    prev = forward(W, x_prev) if prev is None else prev
    c = prev.z
    d = c @ W_pred.T                          # dendritic prediction from the context
    n = x.shape[0]
    w = xp.full((n,), 1.0 / n, dtype=W.dtype, device=array_device(W)) if weights is None else weights
    local = layout is not None and layout.locations > 1
    if local:                                 # per location: y and the row weights broadcast over locations
        y, w = y[:, None], w[:, None]
    u = _scores(cur.z * d, layout)            # score of each pair (and location)
    margin = 1 - y * u
    active = xp.astype(margin > 0, W.dtype)
    gamma = y * active                        # global modulation factor per pair (and location)
    g = _to_neurons(-(gamma * w), layout)     # d loss / d u, per row, with the mean folded in
    loss = xp.sum(w * xp.maximum(margin, xp.zeros_like(margin)))
    grad_W_pred = (g * cur.z).T @ c
    if W_retro is None:                       # CLAPP-s: r = W_pred^T z, gated by the one score
        r, g_r, grad_W_retro, gamma_r, u_r = cur.z @ W_pred, g, None, None, None
    else:                                     # CLAPP: r = W_retro z, with its own score and gate
        r = cur.z @ W_retro.T
        u_r = _scores(c * r, layout)
        margin_r = 1 - y * u_r
        gamma_r = y * xp.astype(margin_r > 0, W.dtype)
        g_r = _to_neurons(-(gamma_r * w), layout)
        loss = loss + xp.sum(w * xp.maximum(margin_r, xp.zeros_like(margin_r)))
        grad_W_retro = (g_r * c).T @ cur.z
    grad_W = (g * d * relu_prime(cur.a)).T @ x + (g_r * r * relu_prime(prev.a)).T @ x_prev
    grad_W, grad_W_pred, grad_W_retro = _masked(layout, W, grad_W, grad_W_pred, grad_W_retro)
    return ClappGrads(loss, gamma, u, grad_W, grad_W_pred, grad_W_retro, cur.z, gamma_r, u_r)


def _scores(zd, layout):
    """``sum_i z_i d_i`` over a layer's neurons (..., n) -> (...), or per location -> (..., locations)."""
    xp = array_namespace(zd)
    if layout is None or layout.locations == 1:
        return xp.sum(zd, axis=-1)
    return xp.sum(xp.reshape(zd, (*zd.shape[:-1], layout.locations, -1)), axis=-1)


def _to_neurons(g, layout):
    """A per-row (...) or per-location (..., locations) factor as one value per neuron (..., 1 or n)."""
    xp = array_namespace(g)
    if layout is None or layout.locations == 1:
        return g[..., None]
    m = layout.n // layout.locations
    return xp.reshape(xp.broadcast_to(g[..., None], (*g.shape, m)), (*g.shape[:-1], layout.n))


def _masked(layout, W, *grads):
    """The gradients of a retinotopic layer zero off its connections (a dense layer's unchanged)."""
    if layout is None or layout.is_dense:
        return grads
    ff, pred = layout.masks_like(W)
    return tuple(None if g is None else g * m for g, m in zip(grads, (ff, pred, pred)))


def clapp_sequences(W, W_pred, x, shifts, weights, *, W_retro=None, layout: Layout | None = None) -> ClappGrads:
    """Explicit CLAPP(-s) gradients for a batch of glimpse sequences, every pair at once.

    The same rule as :func:`clapp_pairs`, organised for speed: the soma of every
    glimpse is computed once, and the Hebbian terms of all pairs that share a
    presynaptic glimpse are summed before the outer product, so ``W``'s update is
    one matrix product over the ``B * T`` glimpses however many pairs there are.

    Parameters
    ----------
    x : array (B, T, n_in)
        Layer input for ``B`` sequences of ``T`` glimpses.
    shifts : sequence of int
        One entry per *pair set*. In set ``s`` the context of row ``(b, t)`` is
        glimpse ``t - 1`` of sequence ``b`` and the current glimpse is glimpse
        ``t`` of sequence ``(b - shifts[s]) mod B``: shift 0 is a fixation
        (y = +1), any other shift a saccade to another image at the same
        position (y = -1).
    weights : array (S, B, T - 1)
        Weight of each pair in the loss (0 leaves a pair out). CLAPP-s uses
        ``1 / (B (T-1))`` for the positive and every negative set; CLAPP keeps,
        per row, only the set that the coin flip chose.
    W_retro : array (n_out, n_out), optional
        CLAPP's retrodiction matrix; ``None`` selects CLAPP-s (``W_pred^T``).
    layout : Layout, optional
        A retinotopic layer: scores and gates per location, as :func:`clapp_pairs`.

    Returns
    -------
    ClappGrads
        ``loss = sum_s sum_bt weights * max(0, 1 - y_s u)`` (summed over locations); ``gamma`` and
        ``u`` have shape (S, B, T - 1) (retinotopic: (S, B, T - 1, locations)); the gradients are
        those of ``loss``.
    """
    xp = array_namespace(W, x)
    B, T, n_in = x.shape
    n = W.shape[0]
    # Organised for speed without changing the math: every matrix product is one 2-D product over
    # all rows (numpy's batched 3-D matmul is several times slower); the pair sets are summed
    # before the products they share (one product each for W_pred, the retrodiction and W, however
    # many sets); and the loop makes few full-size temporaries (each is memory traffic and, with
    # glibc's default malloc, page faults: see rate.network._retain_freed_memory). Rolling by a
    # multiple of B is the identity, so the positive set is never copied.
    x2 = _rows(x)                                 # (B T, n_in)
    a = xp.reshape(x2 @ W.T, (B, T, n))           # somatic drive of every glimpse
    z = xp.maximum(a, 0.0)                        # relu
    c2 = _rows(z[:, :-1, :])                      # context: the layer's rate one glimpse back (a copy)
    d = xp.reshape(c2 @ W_pred.T, (B, T - 1, n))  # dendritic prediction
    z_next = z[:, 1:, :]
    dev = array_device(W)
    delta_a = xp.zeros((B, T, n), dtype=W.dtype, device=dev)  # d loss / d a, built up in place
    delta_cur = delta_a[:, 1:, :]                 # (view) d loss / d z of the current glimpses
    dd = None                                     # d loss / d d = sum over sets of g * z_cur
    # CLAPP's retrodiction pathway scores u_r = c . (W_retro z_cur) = z_cur . e with e = W_retro^T c
    e = None if W_retro is None else xp.reshape(c2 @ W_retro, (B, T - 1, n))
    weights = xp.asarray(weights, device=dev)     # drawn on the host: once to the device (numpy: the same array)
    dr = None                                     # sum over sets of g_r * z_cur
    loss = xp.zeros((), dtype=W.dtype, device=dev)
    local = layout is not None and layout.locations > 1
    gammas, us, gammas_r, us_r = [], [], [], []
    for s, shift in enumerate(shifts):
        y = 1.0 if shift % B == 0 else -1.0
        z_cur = z_next if shift % B == 0 else xp.roll(z_next, shift, axis=0)
        u = _scores(z_cur * d, layout) if local else xp.vecdot(z_cur, d)   # (B, T-1) score of each pair
        margin = 1 - y * u
        gamma = y * xp.astype(margin > 0, W.dtype)
        w = weights[s][..., None] if local else weights[s]
        g = _to_neurons(-(gamma * w), layout)     # d loss / d u per pair
        loss = loss + xp.sum(w * xp.maximum(margin, 0.0))
        gd = g * d                                # back to the sequence the glimpse came from:
        delta_cur += gd if shift % B == 0 else xp.roll(gd, -shift, axis=0)
        gz = g * z_cur
        dd = gz if dd is None else dd + gz
        gammas.append(gamma)
        us.append(u)
        if e is not None:
            u_r = _scores(z_cur * e, layout) if local else xp.vecdot(z_cur, e)
            margin_r = 1 - y * u_r
            gamma_r = y * xp.astype(margin_r > 0, W.dtype)
            loss = loss + xp.sum(w * xp.maximum(margin_r, 0.0))
            gz_r = _to_neurons(-(gamma_r * w), layout) * z_cur
            dr = gz_r if dr is None else dr + gz_r
            gammas_r.append(gamma_r)
            us_r.append(u_r)
    # All pair sets share the context c, so their outer products and retrodictions are summed first:
    # sum_s (g_s z_cur_s)^T c = dd^T c, and sum_s g_s (z_cur_s W_pred) = dd W_pred (CLAPP: dr, W_retro^T).
    dd2 = _rows(dd)
    grad_W_pred = dd2.T @ c2
    if W_retro is None:
        grad_W_retro, back = None, dd2 @ W_pred
    else:
        dr2 = _rows(dr)
        grad_W_retro = c2.T @ dr2                 # sum_s (g_r,s c)^T z_cur_s
        back = dr2 @ W_retro.T
    delta_a[:, :-1, :] += xp.reshape(back, (B, T - 1, n))   # retrodiction r = W_pred^T z (or W_retro z)
    delta_a *= relu_prime(a)
    grad_W = _rows(delta_a).T @ x2
    grad_W, grad_W_pred, grad_W_retro = _masked(layout, W, grad_W, grad_W_pred, grad_W_retro)
    retro = (None, None) if W_retro is None else (xp.stack(gammas_r), xp.stack(us_r))
    return ClappGrads(loss, xp.stack(gammas), xp.stack(us), grad_W, grad_W_pred, grad_W_retro, z, *retro)


def _rows(a):
    """View (or, if not contiguous, copy) of ``a`` (..., n) as a 2-D array of rows (N, n)."""
    return array_namespace(a).reshape(a, (-1, a.shape[-1]))


def init_dense_params(sizes, retro: bool, rng: np.random.Generator, *, dtype="float32", init_scale: float = 1.0,
                      pred_init_scale: float = 0.1) -> dict:
    """Initial weights of a stack of dense CLAPP layers, as every engine starts it.

    He-normal feed-forward weights ``W ~ N(0, init_scale^2 * 2 / n_in)``; small random prediction
    weights ``W_pred ~ N(0, pred_init_scale^2 / n)``; with ``retro`` (CLAPP), an independent
    ``W_retro`` from the same distribution (drawn right after its layer's ``W_pred``), as the
    authors initialise it: a transposed copy would stay the transpose under CLAPP's updates. Keys
    ``"{l}/W"``, ``"{l}/W_pred"``, ``"{l}/W_retro"``
    with layers ``l`` counted from 1, as in metrics and saved arrays. The draws come in this
    order from ``rng``, so one seed gives one network on every engine
    (:func:`~neuroplastic.rules.retinotopic.init_layout_params` of dense layouts).
    """
    return init_layout_params(dense_layouts(sizes), retro, rng, dtype=dtype, init_scale=init_scale,
                              pred_init_scale=pred_init_scale)


def retro_distance(W_pred, W_retro) -> float:
    """How far CLAPP's ``W_retro`` is from the transpose it replaces: ``||W_retro - W_pred^T||_F / ||W_pred||_F``.

    Dense ``(n, n)`` or conv ``(K, C, C)`` (each offset's matrix transposed, the norm over all
    ``K``). 0 means the retrodiction is CLAPP-s's; two independent draws of the same distribution
    start near sqrt(2). It measures how much of the weight-transport problem learning solves.
    """
    xp = array_namespace(W_pred, W_retro)
    diff = W_retro - xp.matrix_transpose(W_pred)
    return float(xp.sqrt(xp.sum(diff * diff)) / xp.sqrt(xp.sum(W_pred * W_pred)))
