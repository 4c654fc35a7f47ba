r"""CLAPP and CLAPP-s for a convolutional layer in the CPC image setting of Illing et al. (2021).

Every image is a grid of ``G_r x G_c`` overlapping patches (the glimpses); the
layer encodes every patch ``p`` into a map ``z(p) (h, w, C)`` (channels last):

.. math::

    a = W \ast x(p),\qquad z_0 = \rho(a),\qquad z = \mathrm{maxpool}(z_0) \text{ (optional)}

The patch ``k`` rows above is the context (the previous glimpse); the patch
``k`` rows below is predicted from it. A pair is a context patch ``(b, r, c)``
and a current patch ``(b', r + k, c)``: ``b' = b`` is a fixation (y = +1),
``b' != b`` a saccade to the same position of another image (y = -1). The
score, the hinge loss and the modulation factor are taken **per location**
``l`` of the map; ``W_pred`` is a C x C matrix (a 1x1 convolution):

.. math::

    d_l = W_{pred}\, c_l,\qquad u_l = z_l^\top d_l,\qquad
    L = \tfrac{1}{n_l}\textstyle\sum_l \max(0,\, 1 - y u_l),\qquad \gamma_l = y\,\Theta(1 - y u_l)

    \Delta W_{pred} = \eta \textstyle\sum_l \gamma_l\, z_l c_l^\top

    \Delta W = \eta \textstyle\sum_l \gamma_l \,[\,\mathrm{hebb}(d_l \odot \rho'(a), x)
               + \mathrm{hebb}(r_l \odot \rho'(a^{ctx}), x^{ctx})\,]

    r_l = W_{pred}^\top z_l \ \text{(CLAPP-s)}\quad\text{or}\quad W_{retro}\, z_l \ \text{(CLAPP;}
    \ \Delta W_{retro} = \eta \textstyle\sum_l \gamma_l\, c_l z_l^\top)

where ``hebb`` is the Hebbian product of a conv kernel (the postsynaptic factor
of each output location times its presynaptic window, summed over the
locations that share the kernel), and with a max-pool the postsynaptic factor
reaches only the winner of each pooling window. ``score="patch"`` scores the
spatial mean of the map instead (one location per patch: what the authors'
code does, ``adaptive_avg_pool2d(out, 1)`` before the loss). Either way the
result is exactly :math:`-\eta\,\partial L / \partial W` of the layer's own
loss (input treated as data), the conv form of :mod:`neuroplastic.rules.clapp`.

As in the authors' code, the loss is on the layer's *output*, after the
max-pool that follows it (their module = conv + ReLU + pool), and a layer may
predict several row offsets ``k`` at once, each with its own ``W_pred``
(paper: k = 2 .. 6, i.e. 5 steps skipping one row).

Gradients are returned (mean over pairs and locations with the weights given),
so that any optimiser applies them; the paper's Hebbian update is ``-lr * grad``.
The convolution and its Hebbian product (im2col) come from
:mod:`neuroplastic.rules.conv`, pure array code with no engine state: the one
place where ``rules/`` imports from ``rate/``.
"""
from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from .conv import conv2d, conv2d_weight_grad, maxpool2, maxpool2_backward, relu_

__all__ = ["ConvClappGrads", "ScoreGrads", "conv_clapp_layer", "conv_forward", "grid_scores"]


class ScoreGrads(NamedTuple):
    """What :func:`grid_scores` returns: the part of the rule that lives on the output maps."""

    loss: object
    gamma: list
    u: list
    W_pred: object
    W_retro: object
    delta: object


class ConvClappGrads(NamedTuple):
    """Per-layer result of one batch of patch grids.

    ``loss`` is the weighted hinge loss; ``gamma`` and ``u`` are lists, one
    entry per row offset ``k``, of arrays ``(S, B, G_r - k, G_c, n_l)`` (pair
    set, image of the context, its row and column, location); ``W``,
    ``W_pred`` (K, C, C) and ``W_retro`` (``None`` for CLAPP-s) are gradients;
    ``z (B, G_r, G_c, h, w, C)`` is the layer's output, the next layer's input.
    """

    loss: object
    gamma: list
    u: list
    W: object
    W_pred: object
    W_retro: object
    z: object


def conv_forward(W, x, *, stride: int = 1, padding: int = 1, pool: bool = False):
    """Output of a conv layer, ``maxpool(relu(W * x))`` (pool optional), for maps ``x (..., h, w, C_in)``."""
    xp = array_namespace(W, x)
    lead = x.shape[:-3]
    x4 = xp.reshape(x, (-1, *x.shape[-3:]))
    z = relu_(conv2d(x4, W, stride, padding))
    if pool:
        z = maxpool2(z)
    return xp.reshape(z, (*lead, *z.shape[1:]))


def grid_scores(q, W_pred, offsets, shifts, weights, *, W_retro=None) -> ScoreGrads:
    """Hinge losses of every (context, current) patch pair at every location, and their gradients.

    Parameters
    ----------
    q : array (B, G_r, G_c, n_l, C)
        The scored map of every patch: ``n_l`` locations of ``C`` channels.
    W_pred : array (K, C, C)
        One prediction matrix per row offset.
    offsets : sequence of K int
        Row offsets: the patch at row ``r`` predicts the patch at row ``r + k``.
    shifts : sequence of S int
        Pair set ``s`` pairs the context of image ``b`` with the current patch of
        image ``(b - shifts[s]) mod B`` (shift 0: fixation, y = +1; else saccade, y = -1).
    weights : array (K, S, B, G_r, G_c)
        Weight of each pair, indexed by its context patch; rows ``r >= G_r - k``
        have no partner and are ignored. A pair's locations share its weight
        (each counts ``1 / n_l``).
    W_retro : array (K, C, C), optional
        CLAPP's retrodiction matrices; ``None`` selects CLAPP-s (``W_pred^T``).

    Returns
    -------
    ScoreGrads
        ``delta = dL/dq``, same shape as ``q``; ``W_pred``/``W_retro`` gradients (K, C, C).

    Notes
    -----
    All pair sets of a location share its B x B score matrix ``U[b', b] = z(b')
    . d(b)``: one batched product gives every score, and the modulation factors
    of all sets are written into one B x B matrix ``G = dL/dU`` whose products with
    the maps give ``dL/dz`` and ``dL/dd`` — the cost hardly grows with the number of
    negatives. Sets with the same shift score the same pairs, so they are merged
    (their weights added) before the scores are gathered; ``gamma`` and ``u`` are
    still returned per set. The maps are transposed once to (G_r, G_c, n_l, B, C)
    so that every row slice is contiguous.
    """
    xp = array_namespace(q, W_pred)
    B, Gr, Gc, n_l, C = q.shape
    qT = _contiguous(xp.permute_dims(q, (1, 2, 3, 0, 4)))              # (G_r, G_c, n_l, B, C)
    dT = xp.zeros_like(qT)                                             # dL/dq, same layout
    loss = xp.zeros((), dtype=q.dtype)
    grad_W_pred = xp.zeros_like(W_pred)
    # the distinct shifts, their labels and the entries U[b', b] they pair: b' = (b - shift) mod B
    distinct = sorted({int(shift) % B for shift in shifts})
    which = xp.asarray([distinct.index(int(shift) % B) for shift in shifts])
    m = len(distinct)
    y = xp.asarray([1.0 if shift == 0 else -1.0 for shift in distinct], dtype=q.dtype)[:, None]   # (m, 1)
    b = xp.arange(B)
    flat = xp.reshape(((b[None, :] - xp.asarray(distinct)[:, None]) % B) * B + b[None, :], (-1,))  # (m B,)
    gammas, us = [], []
    for kappa, k in enumerate(offsets):
        R = Gr - k
        if R < 1:
            raise ValueError(f"row offset {k} leaves no pair on a grid of {Gr} rows")
        ctx, nxt = qT[:R], qT[k:]                                      # context c and current z, contiguous
        ctx2 = xp.reshape(ctx, (-1, C))
        d = xp.reshape(ctx2 @ W_pred[kappa].T, ctx.shape)             # dendritic prediction d = W_pred c
        U = xp.reshape(nxt @ xp.matrix_transpose(d), (R, Gc, n_l, B * B))   # U[..., b' B + b] = z(b') . d(b)
        u = xp.reshape(xp.take(U, flat, axis=-1), (R, Gc, n_l, m, B))  # score of every pair
        margin = 1 - y * u
        gamma = y * xp.astype(margin > 0, q.dtype)                     # modulation factor per pair and location
        w = xp.zeros((m, B, R, Gc), dtype=q.dtype)                     # weights, sets of one shift merged
        for s in range(len(shifts)):
            w[int(which[s]), ...] += weights[kappa, s, :, :R, :]
        wl = xp.permute_dims(w, (2, 3, 0, 1))[:, :, None, :, :] / n_l  # (R, G_c, 1, m, B), locations share it
        loss = loss + xp.sum(wl * xp.maximum(margin, xp.zeros_like(margin)))
        G = xp.zeros_like(U)                                           # dL/dU: -gamma w at the scored pairs
        G[..., flat] = xp.reshape(-gamma * wl, (R, Gc, n_l, m * B))    # (no pair twice: plain assignment)
        G = xp.reshape(G, (R, Gc, n_l, B, B))
        dT[k:] += G @ d                                                # dL/dz(b') = sum_b G[b', b] d(b)
        dd = xp.matrix_transpose(G) @ nxt                              # dL/dd(b) = sum_b' G[b', b] z(b')
        dd2 = xp.reshape(dd, (-1, C))
        grad_W_pred[kappa, ...] = dd2.T @ ctx2                         # sum_l g z c^T
        back = W_pred[kappa] if W_retro is None else W_retro[kappa].T
        dT[:R] += xp.reshape(dd2 @ back, ctx.shape)                    # retrodiction r = W_pred^T z (or W_retro z)
        # per set: (R, G_c, n_l, S, B) -> (S, B, R, G_c, n_l)
        gammas.append(xp.permute_dims(xp.take(gamma, which, axis=3), (3, 4, 0, 1, 2)))
        us.append(xp.permute_dims(xp.take(u, which, axis=3), (3, 4, 0, 1, 2)))
    # CLAPP: dL/dW_retro = sum_l g c z^T, the transpose of W_pred's gradient
    grad_W_retro = None if W_retro is None else _contiguous(xp.permute_dims(grad_W_pred, (0, 2, 1)))
    delta = xp.permute_dims(dT, (3, 0, 1, 2, 4))                        # back to (B, G_r, G_c, n_l, C)
    return ScoreGrads(loss, gammas, us, grad_W_pred, grad_W_retro, delta)


def _contiguous(a):
    """A C-ordered copy of ``a`` (``asarray(copy=True)`` would keep a transposed view's memory order)."""
    out = array_namespace(a).empty(a.shape, dtype=a.dtype)
    out[...] = a
    return out


def conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, *, W_retro=None, stride: int = 1, padding: int = 1,
               pool: bool = False, score: str = "location") -> ConvClappGrads:
    """Explicit CLAPP(-s) gradients of one conv layer for a batch of patch grids.

    Parameters
    ----------
    W : array (C, k, k, C_in)
        Kernel (channels last; see :mod:`neuroplastic.rules.conv`).
    W_pred : array (K, C, C)
        Prediction weights, one matrix per entry of ``offsets``.
    x : array (B, G_r, G_c, h, w, C_in)
        Layer input: the map of every patch of every image (the previous layer's output).
    offsets, shifts, weights, W_retro
        As in :func:`grid_scores`.
    stride, padding : int
        Of the convolution.
    pool : bool
        A 2 x 2 max-pool follows the layer (it is part of the layer's output, and the loss sees it).
    score : {"location", "patch"}
        Score every location of the output map, or the spatial mean of each patch's map.
    """
    if score not in ("location", "patch"):
        raise ValueError(f"unknown score {score!r}; known: 'location', 'patch'")
    xp = array_namespace(W, x)
    B, Gr, Gc = x.shape[:3]
    x4 = xp.reshape(x, (B * Gr * Gc, *x.shape[3:]))
    z0 = relu_(conv2d(x4, W, stride, padding))              # rate of every location (a is not kept: rho'(a) = z0 > 0)
    z = maxpool2(z0) if pool else z0
    N, h, w, C = z.shape
    if score == "location":
        q = xp.reshape(z, (B, Gr, Gc, h * w, C))
    else:
        q = xp.reshape(xp.mean(z, axis=(1, 2)), (B, Gr, Gc, 1, C))
    sg = grid_scores(q, W_pred, offsets, shifts, weights, W_retro=W_retro)
    # dL/dz: every location of the scored map, or the patch mean spread over the map
    if score == "location":
        delta_z = xp.reshape(sg.delta, (N, h, w, C))        # a fresh array: safe to modify in place
    else:
        delta_z = xp.reshape(sg.delta, (N, 1, 1, C)) / (h * w)
    # dL/da: through the max-pool (winner of each window) and the ReLU (rho'(a) = z0 > 0)
    if pool:
        delta_a = maxpool2_backward(z0, z, delta_z, relu=True, out=z0)   # z0 is no longer needed
    elif score == "location":
        delta_z *= xp.astype(z0 > 0, z0.dtype)
        delta_a = delta_z
    else:
        delta_a = delta_z * xp.astype(z0 > 0, z0.dtype)
    grad_W = conv2d_weight_grad(x4, delta_a, W.shape[1], stride, padding)
    z_out = xp.reshape(z, (B, Gr, Gc, h, w, C))
    return ConvClappGrads(sg.loss, sg.gamma, sg.u, grad_W, sg.W_pred, sg.W_retro, z_out)
