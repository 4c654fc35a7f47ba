r"""CLAPP and CLAPP-s for a convolutional layer in the CPC image setting of Illing et al. (2021).

Every image is a grid of ``G_r x G_c`` overlapping patches (the glimpses); the
layer encodes every patch ``p`` into a map ``z(p) (h, w, C)`` (channels last):

.. math::

    a = W \ast x(p) + b,\qquad z_0 = \rho(a),\qquad z = \mathrm{maxpool}(z_0) \text{ (optional)}

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
               + \mathrm{hebb}(r_l \odot \rho'(a^{ctx}), x^{ctx})\,],\qquad r_l = W_{pred}^\top z_l

for CLAPP-s. CLAPP (the authors' ``--asymmetric_W_pred``) retrodicts through a
separate, independently initialised ``W_retro`` (C x C per offset) that scores
the same pair the other way round, with its own gate; each pathway holds the
other side of the pair fixed (:mod:`neuroplastic.rules.clapp`):

.. math::

    r_l = W_{retro}\, z_l,\qquad u_{r,l} = c_l^\top r_l,\qquad \gamma_{r,l} = y\,\Theta(1 - y u_{r,l}),\qquad
    L = \tfrac{1}{n_l}\textstyle\sum_l [\max(0, 1 - y u_l) + \max(0, 1 - y u_{r,l})]

    \Delta W = \eta \textstyle\sum_l [\,\gamma_l\,\mathrm{hebb}(d_l \odot \rho'(a), x)
               + \gamma_{r,l}\,\mathrm{hebb}(r_l \odot \rho'(a^{ctx}), x^{ctx})\,],\qquad
    \Delta W_{retro} = \eta \textstyle\sum_l \gamma_{r,l}\, c_l z_l^\top

where ``hebb`` is the Hebbian product of a conv kernel (the postsynaptic factor
of each output location times its presynaptic window, summed over the
locations that share the kernel), and with a max-pool the postsynaptic factor
reaches only the winner of each pooling window. ``score="patch"`` scores the
spatial mean of the map instead (one location per patch: what the authors'
code does, ``adaptive_avg_pool2d(out, 1)`` before the loss). Either way the
result is exactly :math:`-\eta\,\partial L / \partial W` of the layer's own
loss (input treated as data; for CLAPP, with each pathway's other side held
fixed), the conv form of :mod:`neuroplastic.rules.clapp`. The bias ``b`` (one per output
channel, optional: the authors' layers have one) learns by the same loss,
:math:`\Delta b = -\eta\,\partial L / \partial b`, the postsynaptic factors summed over
locations.

As in the authors' code, the loss is on the layer's *output*, after the
max-pool that follows it (their module = conv + ReLU + pool), and a layer may
predict several row offsets ``k`` at once, each with its own ``W_pred``
(paper: k = 2 .. 6, i.e. 5 steps skipping one row).

Which pairs are scored: :func:`grid_scores` takes *rolled* pair sets (set ``s`` pairs the
context of image ``b`` with the current patch of image ``(b - shift_s) mod B`` at the same grid
position), so that one B x B score matrix per location serves every set; :func:`sampled_scores`
takes the authors' sampling, a positive and ``n`` negatives per context patch, each negative any
patch of the grid (CLAPP-s: a uniformly random patch of the predicted rows, any column, any image,
its own included; CLAPP: one random image per image and offset, the same position). The loss,
its weighting and the gradients have the same form either way.

Gradients are returned (mean over pairs and locations with the weights given),
so that any optimiser applies them; the paper's Hebbian update is ``-lr * grad``.
The convolution and its Hebbian product (im2col) come from
:mod:`neuroplastic.rules.conv`, pure array code with no engine state, so every function here
runs on numpy, torch or CuPy arrays (the scatter of the authors' sampling:
:mod:`neuroplastic.rules.array_ops`).
"""
from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .array_ops import add_rows_at
from .conv import conv2d, conv2d_weight_grad, maxpool2, maxpool2_backward, relu_

__all__ = ["ConvClappGrads", "ScoreGrads", "conv_clapp_layer", "conv_forward", "grid_scores", "sampled_scores"]


class ScoreGrads(NamedTuple):
    """What :func:`grid_scores` and :func:`sampled_scores` return: the part of the rule that lives on the output maps."""

    loss: object
    gamma: list
    u: list
    W_pred: object
    W_retro: object
    delta: object
    gamma_retro: list = None
    u_retro: list = None


class ConvClappGrads(NamedTuple):
    """Per-layer result of one batch of patch grids.

    ``loss`` is the weighted hinge loss (CLAPP: the sum of its two pathways'
    losses); ``gamma`` and ``u`` are lists, one entry per row offset ``k``, of
    arrays ``(S, B, G_r - k, G_c, n_l)`` (pair set, image of the context, its
    row and column, location; sampled negatives: S = 1 + n, set 0 the positive); ``W``, ``W_pred`` (K, C, C) and ``W_retro`` are
    gradients; ``z (B, G_r, G_c, h, w, C)`` is the layer's output, the next
    layer's input. ``W_retro``, ``gamma_retro`` and ``u_retro`` (the
    retrodiction pathway's gradient, and its gates and scores, lists like
    ``gamma``) are ``None`` for CLAPP-s. ``b`` is the bias gradient (C,), ``None`` for a layer without bias.
    """

    loss: object
    gamma: list
    u: list
    W: object
    W_pred: object
    W_retro: object
    z: object
    gamma_retro: list = None
    u_retro: list = None
    b: object = None


def _drive(x4, W, b, stride, padding):
    """``a = W * x + b`` of maps ``x4 (N, h, w, C_in)``; ``b`` (C,) or ``None`` (no bias)."""
    a = conv2d(x4, W, stride, padding)
    if b is not None:
        a += b                                              # a fresh array: channels last, b broadcasts
    return a


def conv_forward(W, x, *, b=None, stride: int = 1, padding: int = 1, pool: bool = False):
    """Output of a conv layer, ``maxpool(relu(W * x + b))`` (pool, bias optional), for maps ``x (..., h, w, C_in)``."""
    xp = array_namespace(W, x)
    lead = x.shape[:-3]
    x4 = xp.reshape(x, (-1, *x.shape[-3:]))
    z = relu_(_drive(x4, W, b, stride, padding))
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
        CLAPP's retrodiction matrices, each with its own score and gate; ``None``
        selects CLAPP-s (``W_pred^T``, gated by the prediction's score).

    Returns
    -------
    ScoreGrads
        ``delta = dL/dq``, same shape as ``q``; ``W_pred``/``W_retro`` gradients (K, C, C);
        for CLAPP, ``gamma_retro`` and ``u_retro`` shaped like ``gamma`` and ``u``.

    Notes
    -----
    All pair sets of a location share its B x B score matrix ``U[b', b] = z(b')
    . d(b)``: one batched product gives every score, and the modulation factors
    of all sets are written into one B x B matrix ``G = dL/dU`` whose products with
    the maps give ``dL/dz`` and ``dL/dd`` — the cost hardly grows with the number of
    negatives. CLAPP's retrodiction scores ``U_r[b', b] = c(b) . W_retro z(b') =
    z(b') . (W_retro^T c(b))`` come the same way, with ``W_retro^T c`` in place of
    ``d``, and their ``G_r`` gives ``dL/dc`` and ``dL/dW_retro`` (none to ``z``, held
    fixed in that pathway, as ``c`` is in the prediction's). Sets with the same
    shift score the same pairs, so they are merged (their weights added) before
    the scores are gathered; ``gamma`` and ``u`` are still returned per set. The maps are transposed once to (G_r, G_c, n_l, B, C)
    so that every row slice is contiguous.
    """
    xp = array_namespace(q, W_pred)
    dev = array_device(q)
    weights = xp.asarray(weights, device=dev)                          # drawn on the host: once to the device
    B, Gr, Gc, n_l, C = q.shape
    qT = _contiguous(xp.permute_dims(q, (1, 2, 3, 0, 4)))              # (G_r, G_c, n_l, B, C)
    dT = xp.zeros_like(qT)                                             # dL/dq, same layout
    loss = xp.zeros((), dtype=q.dtype, device=dev)
    grad_W_pred = xp.zeros_like(W_pred)
    # the distinct shifts, their labels and the entries U[b', b] they pair: b' = (b - shift) mod B
    distinct = sorted({int(shift) % B for shift in shifts})
    which_host = [distinct.index(int(shift) % B) for shift in shifts]
    which = xp.asarray(which_host, device=dev)
    m = len(distinct)
    y = xp.asarray([1.0 if shift == 0 else -1.0 for shift in distinct], dtype=q.dtype, device=dev)[:, None]  # (m, 1)
    b = xp.arange(B, device=dev)
    flat = xp.reshape(((b[None, :] - xp.asarray(distinct, device=dev)[:, None]) % B) * B + b[None, :], (-1,))  # (m B,)
    grad_W_retro = None if W_retro is None else xp.zeros_like(W_retro)
    gammas, us, gammas_r, us_r = [], [], [], []
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
        w = xp.zeros((m, B, R, Gc), dtype=q.dtype, device=dev)         # weights, sets of one shift merged
        for s in range(len(shifts)):
            w[which_host[s], ...] += weights[kappa, s, :, :R, :]
        wl = xp.permute_dims(w, (2, 3, 0, 1))[:, :, None, :, :] / n_l  # (R, G_c, 1, m, B), locations share it
        loss = loss + xp.sum(wl * xp.maximum(margin, xp.zeros_like(margin)))
        G = xp.zeros_like(U)                                           # dL/dU: -gamma w at the scored pairs
        G[..., flat] = xp.reshape(-gamma * wl, (R, Gc, n_l, m * B))    # (no pair twice: plain assignment)
        G = xp.reshape(G, (R, Gc, n_l, B, B))
        dT[k:] += G @ d                                                # dL/dz(b') = sum_b G[b', b] d(b)
        dd = xp.matrix_transpose(G) @ nxt                              # dL/dd(b) = sum_b' G[b', b] z(b')
        dd2 = xp.reshape(dd, (-1, C))
        grad_W_pred[kappa, ...] = dd2.T @ ctx2                         # sum_l g z c^T
        # per set: (R, G_c, n_l, S, B) -> (S, B, R, G_c, n_l)
        gammas.append(xp.permute_dims(xp.take(gamma, which, axis=3), (3, 4, 0, 1, 2)))
        us.append(xp.permute_dims(xp.take(u, which, axis=3), (3, 4, 0, 1, 2)))
        if W_retro is None:                                            # CLAPP-s: r = W_pred^T z, the same gate
            dT[:R] += xp.reshape(dd2 @ W_pred[kappa], ctx.shape)
            continue
        # CLAPP: u_r = c(b) . (W_retro z(b')) = z(b') . e(b) with e = W_retro^T c, its own gate, z held fixed
        e = xp.reshape(ctx2 @ W_retro[kappa], ctx.shape)
        U_r = xp.reshape(nxt @ xp.matrix_transpose(e), (R, Gc, n_l, B * B))
        u_r = xp.reshape(xp.take(U_r, flat, axis=-1), (R, Gc, n_l, m, B))
        margin_r = 1 - y * u_r
        gamma_r = y * xp.astype(margin_r > 0, q.dtype)
        loss = loss + xp.sum(wl * xp.maximum(margin_r, xp.zeros_like(margin_r)))
        G_r = xp.zeros_like(U_r)                                       # dL/dU_r
        G_r[..., flat] = xp.reshape(-gamma_r * wl, (R, Gc, n_l, m * B))
        dr2 = xp.reshape(xp.matrix_transpose(xp.reshape(G_r, (R, Gc, n_l, B, B))) @ nxt, (-1, C))
        grad_W_retro[kappa, ...] = ctx2.T @ dr2                        # sum_l g_r c z^T
        dT[:R] += xp.reshape(dr2 @ W_retro[kappa].T, ctx.shape)        # dL/dc = g_r r, r = W_retro z
        gammas_r.append(xp.permute_dims(xp.take(gamma_r, which, axis=3), (3, 4, 0, 1, 2)))
        us_r.append(xp.permute_dims(xp.take(u_r, which, axis=3), (3, 4, 0, 1, 2)))
    delta = xp.permute_dims(dT, (3, 0, 1, 2, 4))                        # back to (B, G_r, G_c, n_l, C)
    retro = (None, None) if W_retro is None else (gammas_r, us_r)
    return ScoreGrads(loss, gammas, us, grad_W_pred, grad_W_retro, delta, *retro)


def sampled_scores(q, W_pred, offsets, neg_index, weights, *, W_retro=None, retro_pairs=None) -> ScoreGrads:
    """Hinge losses of sampled (context, current) patch pairs at every location, and their gradients.

    The authors' sampling: every context patch has its positive (the patch ``k`` rows below
    in the same image) and ``n`` negatives, each any patch of the grid the caller chose
    (:meth:`~neuroplastic.engines.numpy.conv_stack.ConvClappStack.pair_sets` draws them as the
    authors do). Location ``l`` of the context is scored against location ``l`` of the partner.

    Parameters
    ----------
    q, W_pred, offsets, W_retro
        As in :func:`grid_scores`.
    neg_index : int array (K, n, B, G_r, G_c)
        Negative ``j`` of the context patch ``(b, r, c)`` for offset ``k`` is the patch with flat
        index ``neg_index[kappa, j, b, r, c] = (b' G_r + r') G_c + c'`` of ``q``.
    weights : array (K, 1 + n, B, G_r, G_c)
        Weight of each pair, indexed by its context patch: set 0 the positive (y = +1), set
        ``1 + j`` negative ``j`` (y = -1); rows ``r >= G_r - k`` are ignored. A pair's locations
        share its weight (each counts ``1 / n_l``).
    retro_pairs : (neg_index, weights), optional
        CLAPP: the retrodiction (mirror) pathway's own pairs, shaped as above, as the authors' mirror loss
        draws its own; ``None``: it scores the prediction's pairs.

    Returns
    -------
    ScoreGrads
        As :func:`grid_scores`, with ``gamma`` and ``u`` (and CLAPP's ``gamma_retro``, ``u_retro``)
        per offset shaped ``(1 + n, B, G_r - k, G_c, n_l)``: set 0 the positive.

    Notes
    -----
    The negatives are gathered one at a time (memory stays that of one map per negative), and
    ``dL/dz`` of the sampled patches is scattered back with :func:`~neuroplastic.rules.array_ops.add_rows_at`
    (a patch drawn twice gets both contributions). ``neg_index`` and ``weights``, drawn with numpy,
    are moved to ``q``'s device here.
    """
    xp = array_namespace(q, W_pred)
    dev = array_device(q)
    neg_index = xp.asarray(neg_index, device=dev)
    weights = xp.asarray(weights, device=dev)
    B, Gr, Gc, n_l, C = q.shape
    n = neg_index.shape[1]
    if tuple(weights.shape[:2]) != (len(offsets), 1 + n):
        raise ValueError(f"weights of shape {tuple(weights.shape)}: expected (K, 1 + n, B, G_r, G_c) = "
                         f"({len(offsets)}, {1 + n}, ...) for {n} negatives")
    if retro_pairs is not None:
        if W_retro is None:
            raise ValueError("retro_pairs are the retrodiction pathway's pairs: CLAPP (W_retro) only")
        r_index, r_weights = (xp.asarray(a, device=dev) for a in retro_pairs)
        if tuple(r_weights.shape[:2]) != (len(offsets), 1 + r_index.shape[1]):
            raise ValueError(f"retro weights of shape {tuple(r_weights.shape)}: expected (K, 1 + n, B, G_r, G_c) "
                             f"= ({len(offsets)}, {1 + r_index.shape[1]}, ...)")
    else:
        r_index, r_weights = neg_index, weights
    n_p = B * Gr * Gc
    flat_q = xp.reshape(q, (n_p, n_l, C))
    delta = xp.zeros_like(q)
    flat_delta = xp.reshape(delta, (n_p, n_l * C))                   # a view: scatters land in delta
    loss = xp.zeros((), dtype=q.dtype, device=dev)
    grad_W_pred = xp.zeros_like(W_pred)
    grad_W_retro = None if W_retro is None else xp.zeros_like(W_retro)
    gammas, us, gammas_r, us_r = [], [], [], []
    for kappa, k in enumerate(offsets):
        R = Gr - k
        if R < 1:
            raise ValueError(f"row offset {k} leaves no pair on a grid of {Gr} rows")
        ctx, nxt = q[:, :R], q[:, k:]                                  # (B, R, G_c, n_l, C)
        ctx2 = xp.reshape(ctx, (-1, C))
        # d = W_pred c; CLAPP's e = W_retro^T c: u_r = c . W_retro z = z . e, on the mirror's own pairs
        pathways = [(xp.reshape(ctx2 @ W_pred[kappa].T, ctx.shape), W_pred[kappa], True,
                     *_pairs_of_offset(neg_index, weights, kappa, R, n_l))]
        if W_retro is not None:
            pathways.append((xp.reshape(ctx2 @ W_retro[kappa], ctx.shape), W_retro[kappa].T, False,
                             *_pairs_of_offset(r_index, r_weights, kappa, R, n_l)))
        for pred, M, to_z, index, wl in pathways:
            # set 0: the positive; set 1 + j: negative j, gathered; g = dL/du = -gamma w
            n = index.shape[0]
            u = xp.empty((1 + n, B, R, Gc, n_l), dtype=q.dtype, device=dev)
            u[0] = xp.sum(nxt * pred, axis=-1)
            for j in range(n):
                u[1 + j] = xp.reshape(xp.sum(flat_q[index[j]] * xp.reshape(pred, (-1, n_l, C)), axis=-1), u.shape[1:])
            y = xp.full((1 + n, 1, 1, 1, 1), -1.0, dtype=q.dtype, device=dev)
            y[0] = 1.0
            margin = 1 - y * u
            gamma = y * xp.astype(margin > 0, q.dtype)
            loss = loss + xp.sum(wl * xp.maximum(margin, 0))
            g = -gamma * wl
            dpred = g[0, ..., None] * nxt                              # dL/dpred = sum_s g_s z_s
            for j in range(n):
                dpred += g[1 + j, ..., None] * xp.reshape(flat_q[index[j]], ctx.shape)
            dpred2 = xp.reshape(dpred, (-1, C))
            if to_z:                                                   # the prediction: z gets g d
                delta[:, k:] += g[0, ..., None] * pred
                for j in range(n):
                    add_rows_at(flat_delta, index[j], xp.reshape(g[1 + j, ..., None] * pred, (-1, n_l * C)))
                grad_W_pred[kappa] = dpred2.T @ ctx2                   # sum g z c^T
                gammas.append(gamma)
                us.append(u)
                if W_retro is None:                                    # CLAPP-s: r = W_pred^T z, the same gate
                    delta[:, :R] += xp.reshape(dpred2 @ M, ctx.shape)
            else:                                                      # CLAPP's retrodiction, z held fixed
                grad_W_retro[kappa] = ctx2.T @ dpred2                  # sum g_r c z^T
                delta[:, :R] += xp.reshape(dpred2 @ M, ctx.shape)      # dL/dc = g_r W_retro z
                gammas_r.append(gamma)
                us_r.append(u)
    retro = (None, None) if W_retro is None else (gammas_r, us_r)
    return ScoreGrads(loss, gammas, us, grad_W_pred, grad_W_retro, delta, *retro)


def _pairs_of_offset(neg_index, weights, kappa: int, R: int, n_l: int):
    """Offset ``kappa``'s negatives as flat rows ``(n, B R G_c)`` and its weights per location
    ``(1 + n, B, R, G_c, 1)``, for the ``R`` context rows that have a partner."""
    xp = array_namespace(weights)
    index = xp.reshape(neg_index[kappa, :, :, :R, :], (neg_index.shape[1], -1))
    return index, weights[kappa, :, :, :R, :, None] / n_l


def _contiguous(a):
    """A C-ordered copy of ``a`` (``asarray(copy=True)`` would keep a transposed view's memory order)."""
    out = array_namespace(a).empty(a.shape, dtype=a.dtype, device=array_device(a))
    out[...] = a
    return out


def _bias_grad(delta_a):
    """``dL/db (C,)``: ``dL/da (N, h, w, C)`` summed over maps and locations, as a product with ones (a BLAS
    sum: in float32, numpy's running sum over the leading axes loses ~100x more to rounding)."""
    xp = array_namespace(delta_a)
    d2 = xp.reshape(delta_a, (-1, delta_a.shape[-1]))
    return xp.reshape(xp.ones((1, d2.shape[0]), dtype=d2.dtype, device=array_device(d2)) @ d2, (-1,))


def conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, *, W_retro=None, neg_index=None, retro_pairs=None,
                     b=None, stride: int = 1, padding: int = 1, pool: bool = False,
                     score: str = "location") -> ConvClappGrads:
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
        As in :func:`grid_scores` (rolled pair sets).
    neg_index, retro_pairs
        Sampled negatives instead (``shifts`` is then ``None``; ``neg_index``, ``weights`` and CLAPP's
        mirror pathway's own ``retro_pairs`` as in :func:`sampled_scores`).
    b : array (C,), optional
        Bias of each output channel; ``None``: the layer has none (and no bias gradient is returned).
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
    z0 = relu_(_drive(x4, W, b, stride, padding))           # rate of every location (a is not kept: rho'(a) = z0 > 0)
    z = maxpool2(z0) if pool else z0
    N, h, w, C = z.shape
    if score == "location":
        q = xp.reshape(z, (B, Gr, Gc, h * w, C))
    else:
        q = xp.reshape(xp.mean(z, axis=(1, 2)), (B, Gr, Gc, 1, C))
    if neg_index is None:
        if retro_pairs is not None:
            raise ValueError("retro_pairs are sampled pairs: pass neg_index too (rolled sets serve both pathways)")
        sg = grid_scores(q, W_pred, offsets, shifts, weights, W_retro=W_retro)
    elif shifts is not None:
        raise ValueError("pass either shifts (rolled pair sets) or neg_index (sampled negatives), not both")
    else:
        sg = sampled_scores(q, W_pred, offsets, neg_index, weights, W_retro=W_retro, retro_pairs=retro_pairs)
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
    grad_b = None if b is None else _bias_grad(delta_a)
    grad_W = conv2d_weight_grad(x4, delta_a, W.shape[1], stride, padding)
    z_out = xp.reshape(z, (B, Gr, Gc, h, w, C))
    return ConvClappGrads(sg.loss, sg.gamma, sg.u, grad_W, sg.W_pred, sg.W_retro, z_out, sg.gamma_retro, sg.u_retro,
                          grad_b)
