"""Correctness of the convolutional CLAPP / CLAPP-s rule (science page of the docs, CLAPP, vision setting).

* the im2col convolution equals a naive loop and ``scipy.signal.correlate``; max-pool and its
  backward equal a naive loop (and torch's, ties included);
* the explicit gradients of ``conv_clapp`` are the gradients of its loss (central finite
  differences, float64), with and without padding, stride, max-pool, for both score modes and
  several row offsets, *including* the retrodiction term (mutation check: without it they fail);
* the loss, scores and modulation factors equal an independent loop over every pair and location;
* CLAPP with ``W_retro = W_pred^T`` is CLAPP-s;
* a two-layer ``ConvClappStack`` step equals torch autograd of the per-layer losses (inputs detached);
* CLAPP with an independent ``W_retro`` (its own score and gate per location): explicit gradients equal
  finite differences and torch autograd of the asymmetric loss, and ``W_retro`` learns without
  collapsing onto ``W_pred^T`` (one started there stays there);
* the authors' sampling (``sampling = "authors"``): the drawn pairs equal an entry-by-entry
  re-implementation of their draws, the explicit gradients of the sampled loss equal finite
  differences and torch autograd (CLAPP with its detached pathways), and a small stack learns.
"""
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import correlate

from neuroplastic.rules.conv import conv2d, conv2d_weight_grad, im2col, maxpool2, maxpool2_backward
from neuroplastic.engines.numpy.conv_stack import ConvClappStack
from neuroplastic.rules.architectures import SMALL, VGG6, parse_architecture
from neuroplastic.stimuli.glimpses import patch_grid
from neuroplastic.rules.conv_clapp import conv_clapp_layer, grid_scores
from neuroplastic.rules import retro_distance

from helpers import fd_grad, rel_err

KINK = 1e-3     # distance every ReLU input, hinge margin and max-pool runner-up keeps from its kink


# ---------------------------------------------------------------------------------------------
# helpers

def naive_conv(x, W, stride, padding):
    """a[n, r, c, o] = sum_{i, j, ch} W[o, i, j, ch] x[n, r s + i - p, c s + j - p, ch], by loops."""
    N, h, w, _ = x.shape
    C, k = W.shape[0], W.shape[1]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    a = np.zeros((N, ho, wo, C))
    for n in range(N):
        for r in range(ho):
            for c in range(wo):
                win = xp[n, r * stride:r * stride + k, c * stride:c * stride + k, :]
                a[n, r, c] = np.tensordot(W, win, axes=([1, 2, 3], [0, 1, 2]))
    return a


def naive_pool(z):
    N, h, w, C = z.shape
    out = np.zeros((N, h // 2, w // 2, C))
    for r in range(h // 2):
        for c in range(w // 2):
            out[:, r, c] = z[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].max(axis=(1, 2))
    return out


def layer_maps(W, x, stride, padding, pool, score):
    """Reference forward of one layer: drive a (N, ho, wo, C), pre-pool rate, scored map q (B, Gr, Gc, n_l, C)."""
    B, Gr, Gc = x.shape[:3]
    a = conv2d(x.reshape(-1, *x.shape[3:]), W, stride, padding)   # = naive_conv (test 1), much faster
    z0 = np.maximum(a, 0)
    z = naive_pool(z0) if pool else z0
    if score == "patch":
        z = z.mean(axis=(1, 2), keepdims=True)
    return a, z0, z.reshape(B, Gr, Gc, -1, z.shape[-1])


def loss_ref(W, W_pred, x, offsets, shifts, weights, stride, padding, pool, score, q_ctx=None):
    """Independent loss, pair set by pair set (rolled copies, no shared score matrix); ``q_ctx`` (if
    given) replaces the context maps by constants (the loss without the retrodiction path).
    Returns (loss, u, gamma)."""
    _, _, q = layer_maps(W, x, stride, padding, pool, score)
    qc = q if q_ctx is None else q_ctx
    B, Gr, Gc, n_l, _ = q.shape
    total, us, gs = 0.0, [], []
    for kappa, k in enumerate(offsets):
        u = np.zeros((len(shifts), B, Gr - k, Gc, n_l))
        for s, shift in enumerate(shifts):
            y = 1.0 if shift % B == 0 else -1.0
            cur = np.roll(q[:, k:], shift, axis=0)            # cur[b] = q[(b - shift) mod B]
            u[s] = np.einsum("brclj,ji,brcli->brcl", cur, W_pred[kappa], qc[:, :Gr - k])
            total += np.sum(weights[kappa, s, :, :Gr - k, :, None] / n_l * np.maximum(0.0, 1 - y * u[s]))
        ys = np.array([1.0 if s % B == 0 else -1.0 for s in shifts])[:, None, None, None, None]
        us.append(u)
        gs.append(ys * (1 - ys * u > 0))
    return total, us, gs


CONFIGS = [  # stride, padding, pool, score, offsets
    (1, 1, False, "location", (1,)),
    (1, 0, False, "location", (1,)),
    (2, 1, False, "location", (1,)),
    (2, 0, False, "location", (2,)),
    (1, 1, True, "location", (1, 2)),
    (1, 1, False, "patch", (1,)),
    (1, 1, True, "patch", (1, 2)),
]


def sample_layer(seed, stride, padding, pool, score, offsets, B=3, G=3, P=5, C_in=2, C=3):
    """A random layer and batch of 3 x 3 patch grids (B = 3, 5 x 5 patches, 2 input channels) whose
    ReLU inputs, hinge margins and pool runner-ups all keep KINK from their kinks, with active and
    inactive hinges among positives and negatives."""
    rng = np.random.default_rng(seed)
    shifts = [0, 1, 2]
    K = len(offsets)
    weights = rng.uniform(0.5, 1.5, (K, len(shifts), B, G, G)) / (B * G * G)
    for _ in range(2000):
        W = rng.standard_normal((C, 3, 3, C_in)) / np.sqrt(9 * C_in)
        W_pred = rng.standard_normal((K, C, C)) * rng.choice([0.3, 1.0, 3.0, 10.0])
        x = rng.standard_normal((B, G, G, P, P, C_in))
        a, z0, q = layer_maps(W, x, stride, padding, pool, score)
        if np.abs(a).min() < KINK:
            continue
        if pool:
            N, h, w, _ = z0.shape
            win = z0[:, :h // 2 * 2, :w // 2 * 2].reshape(N, h // 2, 2, w // 2, 2, C).transpose(0, 1, 3, 5, 2, 4)
            win = np.sort(win.reshape(*win.shape[:4], 4), axis=-1)
            top, second = win[..., -1], win[..., -2]
            if ((top > 0) & (top - second < KINK)).any():
                continue
        _, us, _ = loss_ref(W, W_pred, x, offsets, shifts, weights, stride, padding, pool, score)
        ys = np.array([1.0, -1.0, -1.0])[:, None, None, None, None]
        margins = [1 - ys * u for u in us]
        if min(np.abs(m).min() for m in margins) < KINK:
            continue
        m = np.concatenate([mm.reshape(3, -1) for mm in margins], axis=1)
        if all((m[i] > 0).any() and (m[i] <= 0).any() for i in (0, 1)):
            return W, W_pred, x, shifts, weights
    raise RuntimeError("no sample far from the kinks")


# ---------------------------------------------------------------------------------------------
# 1. the conv primitives

@pytest.mark.parametrize("stride, padding", [(1, 1), (1, 0), (2, 0), (2, 1), (3, 2)])
def test_conv2d_equals_naive_loop_and_scipy(stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7, 6, 3))
    W = rng.standard_normal((5, 3, 3, 3))
    a = conv2d(x, W, stride, padding, block_bytes=3000)          # several blocks, and a short last one
    np.testing.assert_allclose(a, naive_conv(x, W, stride, padding), rtol=1e-12, atol=1e-12)
    # scipy: cross-correlation of the padded map with each kernel over (h, w, C), "valid", then strided
    xpad = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    for n in range(x.shape[0]):
        for o in range(W.shape[0]):
            ref = correlate(xpad[n], W[o], mode="valid")[::stride, ::stride, 0]
            np.testing.assert_allclose(a[n, :, :, o], ref, rtol=1e-12, atol=1e-12)
    # float32 in, float32 out
    assert conv2d(x.astype(np.float32), W.astype(np.float32), stride, padding).dtype == np.float32


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), (2, 1)])
def test_conv2d_weight_grad_is_the_hebbian_sum(stride, padding):
    """dL/dW for L = sum(delta * a): the sum over locations of delta times the input window."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 7, 2))
    W = rng.standard_normal((4, 3, 3, 2))
    delta = rng.standard_normal(conv2d(x, W, stride, padding).shape)
    g = conv2d_weight_grad(x, delta, 3, stride, padding, block_bytes=2000)
    cols = im2col(x, 3, stride, padding)                        # (N, ho, wo, 3, 3, C)
    ref = np.einsum("nrco,nrcijk->oijk", delta, cols)
    np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-12)
    # and it is the gradient of the (linear) drive
    fd = fd_grad(lambda P: float(np.sum(delta * conv2d(x, P, stride, padding))), W.copy())
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-7)


def test_maxpool_and_backward_route_to_the_first_maximum():
    rng = np.random.default_rng(2)
    z = rng.integers(0, 3, (2, 5, 6, 3)).astype(float)          # odd height and many ties
    m = maxpool2(z)
    np.testing.assert_array_equal(m, naive_pool(z))
    delta = rng.standard_normal(m.shape)
    g = maxpool2_backward(z, m, delta)
    ref = np.zeros_like(z)
    for n, r, c, ch in np.ndindex(m.shape):
        win = z[n, 2 * r:2 * r + 2, 2 * c:2 * c + 2, ch].ravel()
        i = int(np.argmax(win))                                 # first maximum, row-major
        ref[n, 2 * r + i // 2, 2 * c + i % 2, ch] = delta[n, r, c, ch]
    np.testing.assert_array_equal(g, ref)
    # in place into the forward map, with the ReLU factor (winner > 0)
    z2 = z.copy()
    g2 = maxpool2_backward(z2, m, delta, relu=True, out=z2)
    assert g2 is z2
    winner = np.zeros_like(z)
    winner[:, :4, :6] = np.repeat(np.repeat(m, 2, 1), 2, 2)     # each window's maximum, on its 2 x 2 block
    np.testing.assert_array_equal(g2, ref * (winner > 0))


@pytest.mark.torch
def test_maxpool_backward_equals_torch_with_ties():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z = rng.integers(0, 3, (2, 6, 5, 3)).astype(float)
    m = maxpool2(z)
    delta = rng.standard_normal(m.shape)
    zt = torch.tensor(z).permute(0, 3, 1, 2).requires_grad_()
    torch.nn.functional.max_pool2d(zt, 2).backward(torch.tensor(delta).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(maxpool2_backward(z, m, delta), zt.grad.permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------------------------------------
# 2. explicit gradients = finite differences; the retrodiction term is there

@pytest.mark.parametrize("stride, padding, pool, score, offsets", CONFIGS)
def test_conv_clapp_s_gradients_match_finite_differences(stride, padding, pool, score, offsets):
    W, W_pred, x, shifts, weights = sample_layer(10, stride, padding, pool, score, offsets)
    kw = dict(stride=stride, padding=padding, pool=pool, score=score)
    g = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, **kw)
    assert g.W_retro is None
    ref, us, gs = loss_ref(W, W_pred, x, offsets, shifts, weights, stride, padding, pool, score)
    assert np.isclose(float(g.loss), ref, rtol=1e-12)
    for kappa in range(len(offsets)):
        np.testing.assert_allclose(g.u[kappa], us[kappa], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(g.gamma[kappa], gs[kappa])

    def loss(P_W=W, P_pred=W_pred):
        return float(conv_clapp_layer(P_W, P_pred, x, offsets, shifts, weights, **kw).loss)

    fd_W = fd_grad(lambda P: loss(P_W=P), W.copy())
    fd_Wp = fd_grad(lambda P: loss(P_pred=P), W_pred.copy())
    assert rel_err(g.W, fd_W) < 1e-6
    assert rel_err(g.W_pred, fd_Wp) < 1e-6

    # Mutation check: the gradient with the context held constant (no retrodiction path) is a
    # different vector, and it is what the rule gives with the retrodiction switched off (W_retro = 0).
    _, _, q0 = layer_maps(W, x, stride, padding, pool, score)
    fd_no_retro = fd_grad(lambda P: loss_ref(P, W_pred, x, offsets, shifts, weights, stride, padding, pool, score,
                                             q_ctx=q0)[0], W.copy())
    assert rel_err(g.W, fd_no_retro) > 1e-2
    g0 = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, W_retro=np.zeros_like(W_pred), **kw)
    assert rel_err(g0.W, fd_no_retro) < 1e-6
    assert rel_err(g0.W, fd_W) > 1e-2                           # dropping the term fails the check


def test_clapp_with_transposed_retro_is_clapp_s():
    offsets = (1, 2)
    W, W_pred, x, shifts, weights = sample_layer(11, 1, 1, True, "location", offsets)
    kw = dict(stride=1, padding=1, pool=True)
    s = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, **kw)
    c = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, W_retro=W_pred.transpose(0, 2, 1).copy(), **kw)
    np.testing.assert_allclose(c.W, s.W, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.W_pred, s.W_pred, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.W_retro, s.W_pred.transpose(0, 2, 1), rtol=1e-13, atol=1e-15)
    for kappa in range(len(offsets)):                            # the scores agree, so do the gates
        np.testing.assert_array_equal(c.gamma_retro[kappa], s.gamma[kappa])
    np.testing.assert_allclose(float(c.loss), 2 * float(s.loss), rtol=1e-13)   # both pathways count
    assert s.gamma_retro is None and s.u_retro is None
    other = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, W_retro=W_pred.transpose(0, 2, 1) + 0.3, **kw)
    assert rel_err(other.W, s.W) > 1e-3


def test_grid_scores_repeated_shifts_and_masked_pairs():
    """A shift drawn twice counts twice; a pair of weight 0 contributes nothing (CLAPP's masks)."""
    rng = np.random.default_rng(12)
    B, Gr, Gc, n_l, C = 4, 4, 2, 3, 5
    q = np.abs(rng.standard_normal((B, Gr, Gc, n_l, C)))
    W_pred = rng.standard_normal((1, C, C))
    w = rng.uniform(0.5, 1.5, (1, 3, B, Gr, Gc)) * (rng.random((1, 3, B, Gr, Gc)) < 0.6)
    g = grid_scores(q, W_pred, (1,), [0, 3, 3], w)
    merged = grid_scores(q, W_pred, (1,), [0, 3], np.concatenate([w[:, :1], w[:, 1:2] + w[:, 2:3]], axis=1))
    np.testing.assert_allclose(g.loss, merged.loss, rtol=1e-12)
    np.testing.assert_allclose(g.W_pred, merged.W_pred, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.delta, merged.delta, rtol=1e-12, atol=1e-14)
    fd_q = fd_grad(lambda P: float(grid_scores(P, W_pred, (1,), [0, 3, 3], w).loss), q.copy())
    assert rel_err(g.delta, fd_q) < 1e-6


# ---------------------------------------------------------------------------------------------
# 3. the stack

def test_architectures_and_pair_sets():
    assert [(s.channels, s.pool) for s in parse_architecture(VGG6)] == [
        (128, False), (256, True), (256, False), (512, True), (1024, True), (1024, True)]
    assert len(parse_architecture("small")) == len([c for c in SMALL if c != "M"])
    for bad in (["M", 3], [3, "M", "M"], [3, "X"], [], "vgg7"):
        with pytest.raises(ValueError):
            parse_architecture(bad)

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="not a CLAPP rule|unknown rule"):
        ConvClappStack.init(SMALL, 1, "hinge_e2e_bp", rng)       # Tang's rules train whole images, not patch pairs
    net = ConvClappStack.init(SMALL, 1, "clapp_s", rng, offsets=(2, 3))
    assert net.params["2/W"].shape == (64, 3, 3, 32) and net.params["2/W_pred"].shape == (2, 64, 64)
    assert net.params["1/W"].dtype == np.float32
    shifts, w = net.pair_sets(8, 5, 4, rng, negatives=4, saccade_prob=0.5)
    assert shifts[0] == 0 and all(0 < s < 8 for s in shifts[1:]) and w.shape == (2, 5, 8, 5, 4)
    assert (w[0, :, :, 3:] == 0).all() and (w[1, :, :, 2:] == 0).all()          # rows without a partner
    np.testing.assert_allclose(w[:, 0].sum(), 1.0)                              # positives: mean over offsets
    np.testing.assert_allclose(w[:, 1:].sum(), 1.0)                             # as much as all negatives
    clapp = ConvClappStack.init(SMALL, 1, "clapp", rng, offsets=(1,))
    # W_retro: an independent draw of W_pred's distribution, right after it (not its transpose)
    again = np.random.default_rng(1)
    net = ConvClappStack.init([4, "M", 6], 1, "clapp", again, offsets=(1, 2))
    again = np.random.default_rng(1)
    _, Wp, Wr = again.standard_normal((4, 3, 3, 1)), again.standard_normal((2, 4, 4)), again.standard_normal((2, 4, 4))
    np.testing.assert_allclose(net.params["1/W_pred"], Wp * 0.1 / 2, rtol=1e-6)
    np.testing.assert_allclose(net.params["1/W_retro"], Wr * 0.1 / 2, rtol=1e-6)
    shifts, w = clapp.pair_sets(8, 5, 4, rng, negatives=1, saccade_prob=0.5)
    assert len(shifts) == 2 and ((w[0, :, :, :4] > 0).sum(axis=0) == 1).all()  # one set per pair


def test_patch_grid_and_features():
    rng = np.random.default_rng(4)
    images = rng.random((5, 12, 12)).astype(np.float32)
    grid = patch_grid(images, 8, 4)                            # 2 x 2 grid of 8 x 8 patches
    assert grid.shape == (5, 2, 2, 8, 8, 1)
    np.testing.assert_array_equal(grid[:, 1, 0, :, :, 0], images[:, 4:12, 0:8])
    net = ConvClappStack.init([4, "M", 6, "M"], 1, "clapp_s", rng)
    feats = net.features(grid[..., 0], chunk=2)                 # grey patches: channel axis added
    assert [f.shape for f in feats] == [(5, 4, 4), (5, 4, 6)] and feats[0].dtype == np.float32
    z = np.maximum(conv2d(grid.reshape(-1, 8, 8, 1), net.params["1/W"]), 0)
    np.testing.assert_allclose(feats[0], maxpool2(z).mean(axis=(1, 2)).reshape(5, 4, 4), rtol=1e-5)


def test_small_stack_learns_on_natural_images():
    """A few Adam steps on one batch lower every layer's loss (a smoke test of the whole loop)."""
    from neuroplastic.engines.numpy.optim import Adam
    rng = np.random.default_rng(5)
    images = np.cumsum(np.cumsum(rng.standard_normal((8, 24, 24)), 1), 2).astype(np.float32)   # smooth images
    images = (images - images.mean()) / images.std()
    x = patch_grid(images, 8, 4)[..., 0]
    net = ConvClappStack.init([8, "M", 8], 1, "clapp_s", rng, offsets=(1, 2))
    opt = Adam(1e-2)
    shifts, w = net.pair_sets(8, 5, 5, rng, negatives=3, saccade_prob=0.5)
    first = net.train_batch(x, opt, shifts, w)
    for _ in range(20):
        last = net.train_batch(x, opt, shifts, w)
    assert all(0 < m <= 1 for m in first.modulated)
    assert all(b < 0.9 * a for a, b in zip(first.loss, last.loss)), (first.loss, last.loss)


class _Recorder:
    def step(self, params, grads):
        self.grads = {k: v.copy() for k, v in grads.items()}


def test_clapp_stack_trains_w_retro():
    """CLAPP: one pair per context patch (fixation or saccade); W_retro learns c z^T gated by its own score,
    which is W_pred's gradient transposed only when W_retro = W_pred^T."""
    rng = np.random.default_rng(6)
    net = ConvClappStack.init([4, "M", 5], 1, "clapp", rng, offsets=(1, 2), dtype="float64", pred_init_scale=3.0)
    x = rng.random((5, 4, 3, 8, 8))
    shifts, w = net.pair_sets(5, 4, 3, rng, negatives=1, saccade_prob=0.5)
    rec = _Recorder()
    net.train_batch(x, rec, shifts, w)
    assert set(rec.grads) == {f"{l + 1}/{n}" for l in (0, 1) for n in ("W", "W_pred", "W_retro")}
    for l in (0, 1):
        assert rel_err(rec.grads[f"{l + 1}/W_retro"], rec.grads[f"{l + 1}/W_pred"].transpose(0, 2, 1)) > 1e-2
    for l in (0, 1):
        net.params[f"{l + 1}/W_retro"] = net.params[f"{l + 1}/W_pred"].transpose(0, 2, 1).copy()
    net.train_batch(x, rec, shifts, w)
    for l in (0, 1):
        np.testing.assert_allclose(rec.grads[f"{l + 1}/W_retro"], rec.grads[f"{l + 1}/W_pred"].transpose(0, 2, 1),
                                   rtol=1e-12, atol=1e-15)


def _torch_stack_losses(torch, params, x, net, shifts, weights, detach=True):
    """The per-layer losses of ConvClappStack in torch (NCHW conv, roll-based pairs), inputs detached.

    With ``"{l}/W_pred2"`` in ``params`` (CLAPP, W_pred2 = W_retro^T per offset), as the authors write it:
    loss(z, c.detach()) with W_pred plus the mirror loss(z.detach(), c) with W_pred2, both scoring z . (M c).
    """
    F = torch.nn.functional
    B, Gr, Gc = x.shape[:3]
    h = x.reshape(B * Gr * Gc, *x.shape[3:]).permute(0, 3, 1, 2)           # N, C, P, P
    losses = []
    for l, spec in enumerate(net.layers):
        h = h.detach() if detach else h
        z = torch.relu(F.conv2d(h, params[f"{l + 1}/W"].permute(0, 3, 1, 2), stride=net.stride, padding=net.padding))
        if spec.pool:
            z = F.max_pool2d(z, 2)
        q = z.mean(dim=(2, 3), keepdim=True) if net.score == "patch" else z
        n_l = q.shape[2] * q.shape[3]
        q = q.reshape(B, Gr, Gc, q.shape[1], n_l).transpose(-1, -2)       # B, Gr, Gc, n_l, C
        loss = 0.0
        mirror = f"{l + 1}/W_pred2" in params
        for kappa, k in enumerate(net.offsets):
            ctx = q[:, :Gr - k]
            d = (ctx.detach() if mirror else ctx) @ params[f"{l + 1}/W_pred"][kappa].T
            for s, shift in enumerate(shifts):
                y = 1.0 if shift % B == 0 else -1.0
                cur = torch.roll(q[:, k:], shift, dims=0)
                u = (cur * d).sum(-1)
                loss = loss + (weights[kappa, s, :, :Gr - k, :, None] / n_l * torch.relu(1 - y * u)).sum()
                if mirror:
                    u_m = (cur.detach() * (ctx @ params[f"{l + 1}/W_pred2"][kappa].T)).sum(-1)
                    loss = loss + (weights[kappa, s, :, :Gr - k, :, None] / n_l * torch.relu(1 - y * u_m)).sum()
        losses.append(loss)
        h = z
    return losses


@pytest.mark.torch
@pytest.mark.parametrize("score, offsets, pred_scale", [("location", (1, 2), 3.0), ("patch", (1,), 10.0)])
def test_two_layer_stack_matches_torch_autograd(score, offsets, pred_scale):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    B, G, P = 4, 3, 6
    net = ConvClappStack.init([3, "M", 4], 2, "clapp_s", rng, offsets=offsets, dtype="float64",
                              pred_init_scale=pred_scale, score=score)
    x = np.abs(rng.standard_normal((B, G, G, P, P, 2)))
    shifts, weights = net.pair_sets(B, G, G, rng, negatives=2, saccade_prob=0.5)
    params0 = {k: v.copy() for k, v in net.params.items()}
    rec = _Recorder()
    stats = net.train_batch(x, rec, shifts, weights)
    assert all(0 < m < 1 for m in stats.modulated)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    losses = _torch_stack_losses(torch, tp, torch.tensor(x), net, shifts, torch.tensor(weights))
    sum(losses).backward()
    np.testing.assert_allclose(stats.loss, [v.item() for v in losses], rtol=1e-12)
    assert set(rec.grads) == set(tp)
    for k, t in tp.items():
        np.testing.assert_allclose(rec.grads[k], t.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)
    # the detach matters: layer 1's kernel gets a gradient from layer 2's loss, which we leave out
    tp2 = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    l2 = _torch_stack_losses(torch, tp2, torch.tensor(x), net, shifts, torch.tensor(weights), detach=False)[1]
    assert torch.autograd.grad(l2, tp2["1/W"])[0].abs().max() > 1e-6


def test_import_order():
    """rules.conv_clapp uses rate.conv and rate.network uses rules: both import orders work."""
    for code in ("import neuroplastic.rules, neuroplastic.engines.numpy as r; r.ConvClappStack",
                 "import neuroplastic.engines.numpy as r, neuroplastic.rules; r.ConvClappStack"):
        subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# 4. CLAPP: an independent W_retro with its own score and gate

def asym_loss_ref(W, W_pred, W_retro, x, offsets, shifts, weights, stride, padding, pool, score, W_held):
    """CLAPP's loss, pair set by pair set: the prediction pathway z . (W_pred c) with the context maps
    computed by the constant ``W_held``, the retrodiction pathway c . (W_retro z) with the current maps
    computed by it. Returns (loss, u_retro, gamma_retro)."""
    _, _, q = layer_maps(W, x, stride, padding, pool, score)
    _, _, q0 = layer_maps(W_held, x, stride, padding, pool, score)
    B, Gr, Gc, n_l, _ = q.shape
    total, us, gs = 0.0, [], []
    for kappa, k in enumerate(offsets):
        u_r = np.zeros((len(shifts), B, Gr - k, Gc, n_l))
        for s, shift in enumerate(shifts):
            y = 1.0 if shift % B == 0 else -1.0
            cur, cur0 = np.roll(q[:, k:], shift, axis=0), np.roll(q0[:, k:], shift, axis=0)
            u = np.einsum("brclj,ji,brcli->brcl", cur, W_pred[kappa], q0[:, :Gr - k])
            u_r[s] = np.einsum("brcli,ij,brclj->brcl", q[:, :Gr - k], W_retro[kappa], cur0)
            w = weights[kappa, s, :, :Gr - k, :, None] / n_l
            total += np.sum(w * (np.maximum(0.0, 1 - y * u) + np.maximum(0.0, 1 - y * u_r[s])))
        ys = np.array([1.0 if s % B == 0 else -1.0 for s in shifts])[:, None, None, None, None]
        us.append(u_r)
        gs.append(ys * (1 - ys * u_r > 0))
    return total, us, gs


def sample_layer_retro(seed, stride, padding, pool, score, offsets, pairing):
    """sample_layer with an independent W_retro whose margins keep KINK from the kink; ``stochastic``
    keeps one of the fixation and a saccade set per pair, as CLAPP's pair_sets do."""
    W, W_pred, x, shifts, weights = sample_layer(seed, stride, padding, pool, score, offsets)
    rng = np.random.default_rng(100 + seed)
    if pairing == "stochastic":
        saccade = rng.random((len(offsets), *weights.shape[2:])) < 0.5
        shifts, weights = shifts[:2], weights[:, :2] * np.stack([~saccade, saccade], axis=1)
    for _ in range(2000):
        W_retro = rng.standard_normal(W_pred.shape) * rng.choice([0.3, 1.0, 3.0, 10.0])
        g = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, W_retro=W_retro, stride=stride,
                             padding=padding, pool=pool, score=score)
        ys = np.array([1.0 if s == 0 else -1.0 for s in shifts])[:, None, None, None, None]
        if min(np.abs(1 - ys * u).min() for u in g.u_retro) < KINK:
            continue
        active = [np.broadcast_to((weights[kappa, :, :, :x.shape[1] - k] > 0)[..., None], gr.shape)
                  for kappa, (k, gr) in enumerate(zip(offsets, g.gamma_retro))]
        gr = np.concatenate([gr[a] for gr, a in zip(g.gamma_retro, active)])
        gp = np.concatenate([gp[a] for gp, a in zip(g.gamma, active)])
        if (gr != 0).any() and (gr == 0).any() and (gr != gp).any():
            return W, W_pred, W_retro, x, shifts, weights
    raise RuntimeError("no sample far from the kinks")


RETRO_CONFIGS = [  # stride, padding, pool, score, offsets, pairing
    (1, 1, False, "location", (1, 2), "contrastive"),
    (1, 1, True, "location", (1, 2), "stochastic"),
    (1, 1, False, "patch", (1, 2), "stochastic"),
    (1, 1, True, "patch", (1, 2), "contrastive"),
]


@pytest.mark.parametrize("stride, padding, pool, score, offsets, pairing", RETRO_CONFIGS)
def test_conv_clapp_with_w_retro_matches_finite_differences(stride, padding, pool, score, offsets, pairing):
    W, W_pred, W_retro, x, shifts, weights = sample_layer_retro(13, stride, padding, pool, score, offsets, pairing)
    kw = dict(stride=stride, padding=padding, pool=pool, score=score)
    g = conv_clapp_layer(W, W_pred, x, offsets, shifts, weights, W_retro=W_retro, **kw)
    W_held = W.copy()

    def loss(P_W=W, P_pred=W_pred, P_retro=W_retro):
        return asym_loss_ref(P_W, P_pred, P_retro, x, offsets, shifts, weights, stride, padding, pool, score, W_held)[0]

    ref, us, gs = asym_loss_ref(W, W_pred, W_retro, x, offsets, shifts, weights, stride, padding, pool, score, W)
    assert np.isclose(float(g.loss), ref, rtol=1e-12)
    for kappa in range(len(offsets)):
        np.testing.assert_allclose(g.u_retro[kappa], us[kappa], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(g.gamma_retro[kappa], gs[kappa])
    assert rel_err(g.W, fd_grad(lambda P: loss(P_W=P), W.copy())) < 1e-6
    assert rel_err(g.W_pred, fd_grad(lambda P: loss(P_pred=P), W_pred.copy())) < 1e-6
    fd_Wr = fd_grad(lambda P: loss(P_retro=P), W_retro.copy())
    assert rel_err(g.W_retro, fd_Wr) < 1e-6
    assert rel_err(g.W_pred.transpose(0, 2, 1), fd_Wr) > 1e-2     # the old rule (W_pred's gate) fails


@pytest.mark.torch
@pytest.mark.parametrize("score, offsets, pred_scale", [("location", (1, 2), 3.0), ("patch", (1, 2), 10.0)])
def test_two_layer_clapp_stack_with_w_retro_matches_torch_autograd(score, offsets, pred_scale):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    B, G, P = 4, 3, 6
    net = ConvClappStack.init([3, "M", 4], 2, "clapp", rng, offsets=offsets, dtype="float64",
                              pred_init_scale=pred_scale, score=score)       # layer 1 pooled, layer 2 not
    x = np.abs(rng.standard_normal((B, G, G, P, P, 2)))
    shifts, weights = net.pair_sets(B, G, G, rng, negatives=1, saccade_prob=0.5)
    params0 = {k: v.copy() for k, v in net.params.items()}
    rec = _Recorder()
    stats = net.train_batch(x, rec, shifts, weights)
    assert all(0 < m < 1 for m in stats.modulated)
    tp = {k.replace("W_retro", "W_pred2"): torch.tensor(v.transpose(0, 2, 1).copy() if k.endswith("W_retro") else v,
                                                        requires_grad=True) for k, v in params0.items()}
    losses = _torch_stack_losses(torch, tp, torch.tensor(x), net, shifts, torch.tensor(weights))
    sum(losses).backward()
    np.testing.assert_allclose(stats.loss, [v.item() for v in losses], rtol=1e-12)
    assert set(rec.grads) == set(params0)
    for k in params0:
        theirs = tp[k.replace("W_retro", "W_pred2")].grad.numpy()
        np.testing.assert_allclose(rec.grads[k], theirs.transpose(0, 2, 1) if k.endswith("W_retro") else theirs,
                                   rtol=1e-10, atol=1e-13, err_msg=k)
        assert np.abs(rec.grads[k]).max() > 1e-8, k


def test_conv_w_retro_learns_without_collapsing_onto_the_transpose():
    """From an independent start the distance to W_pred^T changes but stays far from 0; from W_pred^T it stays 0."""
    from neuroplastic.engines.numpy.optim import Adam
    rng = np.random.default_rng(9)
    net = ConvClappStack.init([4, "M", 5], 1, "clapp", rng, offsets=(1, 2), dtype="float64", pred_init_scale=1.0)
    same = ConvClappStack([4, "M", 5], 1, "clapp", {k: v.copy() for k, v in net.params.items()}, offsets=(1, 2))
    for l in (1, 2):
        same.params[f"{l}/W_retro"] = same.params[f"{l}/W_pred"].transpose(0, 2, 1).copy()

    def distances(n):
        return np.array([retro_distance(n.params[f"{l}/W_pred"], n.params[f"{l}/W_retro"]) for l in (1, 2)])

    x = rng.random((6, 4, 3, 8, 8))
    d0, retro0 = distances(net), net.params["1/W_retro"].copy()
    assert (d0 > 0.5).all() and not distances(same).any()
    opt, opt_same = Adam(3e-2), Adam(3e-2)
    for _ in range(15):
        shifts, w = net.pair_sets(6, 4, 3, rng, negatives=1, saccade_prob=0.5)
        net.train_batch(x, opt, shifts, w)
        same.train_batch(x, opt_same, shifts, w)
    d1 = distances(net)
    assert np.isfinite(d1).all() and (d1 > 0.5).all() and (np.abs(d1 - d0) > 1e-3).all(), (d0, d1)
    assert rel_err(net.params["1/W_retro"], retro0) > 1e-2
    assert (distances(same) < 1e-12).all()
    assert rel_err(same.params["1/W_pred"], net.params["1/W_pred"]) > 1e-3     # it learned all the same


# ---------------------------------------------------------------------------------------------
# 5. the authors' sampling (sampling = "authors"): their index draws, exact gradients, learning

def authors_draws_ref(rule, L, offsets, B, Gr, Gc, n, saccade_prob, seed):
    """The authors' index draws, re-done entry by entry on ``default_rng(seed)`` in the documented order:
    per layer (CLAPP: its prediction pathway, then its mirror pathway, each with a coin per image first), per
    offset: CLAPP-s one flat draw per (row, column, image, negative) over the R G_c B predicted entries in
    (row, column, image) order; CLAPP one image per image. Returns {(l, kappa, j, b, r, c): (b', r', c')} and
    {(l, kappa, s, b, r, c): weight}; CLAPP's keys start (l, pathway, ...)."""
    rng = np.random.default_rng(seed)
    K = len(offsets)
    partners, weights = {}, {}
    for l, path in [(l, path) for l in range(L) for path in range(2 if rule == "clapp" else 1)]:
        key = (l, path) if rule == "clapp" else (l,)
        coin = rng.random(B) < saccade_prob if rule == "clapp" else None
        for kappa, k in enumerate(offsets):
            R = Gr - k
            w = 1.0 / (K * B * R * Gc)
            draws = rng.integers(R * Gc * B, size=(R, Gc, B, n)) if rule == "clapp_s" else rng.integers(B, size=B)
            for b in range(B):
                for r in range(R):
                    for c in range(Gc):
                        if rule == "clapp_s":
                            weights[(*key, kappa, 0, b, r, c)] = w
                            for j in range(n):
                                v = int(draws[r, c, b, j])
                                row, rest = divmod(v, Gc * B)
                                col, img = divmod(rest, B)
                                partners[(*key, kappa, j, b, r, c)] = (img, k + row, col)
                                weights[(*key, kappa, 1 + j, b, r, c)] = w / n
                        else:
                            partners[(*key, kappa, 0, b, r, c)] = (int(draws[b]), r + k, c)
                            weights[(*key, kappa, 0, b, r, c)] = 0.0 if coin[b] else w
                            weights[(*key, kappa, 1, b, r, c)] = w if coin[b] else 0.0
    return partners, weights


@pytest.mark.parametrize("rule, n", [("clapp_s", 3), ("clapp", 1)])
def test_authors_pair_draws_equal_a_reimplementation(rule, n):
    B, Gr, Gc, offsets = 4, 5, 3, (1, 3)
    net = ConvClappStack.init([3, "M", 4], 1, rule, np.random.default_rng(0), offsets=offsets, sampling="authors")
    index, weights = net.pair_sets(B, Gr, Gc, np.random.default_rng(7), negatives=n, saccade_prob=0.5)
    paths = (2,) if rule == "clapp" else ()               # CLAPP: the prediction's pairs, then the mirror's
    assert index.shape == (2, *paths, 2, n, B, Gr, Gc) and weights.shape == (2, *paths, 2, 1 + n, B, Gr, Gc)
    partners, ref_w = authors_draws_ref(rule, 2, offsets, B, Gr, Gc, n, 0.5, 7)
    got = {key: tuple(int(i) for i in np.unravel_index(index[key], (B, Gr, Gc))) for key in partners}
    assert got == partners
    for key in np.ndindex(weights.shape):
        assert weights[key] == pytest.approx(ref_w.get(key, 0.0), abs=0, rel=1e-15), key
    if rule == "clapp":                                   # one coin per image: positives or negatives
        assert ((weights[:, :, :, 0] > 0) != (weights[:, :, :, 1] > 0))[:, :, 0, :, 0, 0].any()
        assert len({partners[key][0] for key in partners}) > 1
        # the mirror pathway's coins and images are its own draws, not the prediction's
        assert not np.array_equal(index[:, 0], index[:, 1]) and not np.array_equal(weights[:, 0], weights[:, 1])
    for l in range(2):                                   # positives weigh 1 in all, as the rolled sets
        np.testing.assert_allclose(weights[l].sum(), 2.0)       # CLAPP: 1 per pathway; CLAPP-s: 1 + 1
    with pytest.raises(ValueError, match="sampling"):
        ConvClappStack.init([3], 1, rule, np.random.default_rng(0), sampling="random")


def sampled_pairs(offsets, neg_index, weights, Gr, Gc):
    """Every sampled pair as flat patch indices: per offset (context, partner, weight, y), rows with a partner."""
    K, S, B = weights.shape[:3]
    out = []
    for kappa, k in enumerate(offsets):
        ctx, partner, w, y = [], [], [], []
        for s, b, r, c in np.ndindex(S, B, Gr - k, Gc):
            ctx.append((b * Gr + r) * Gc + c)
            partner.append((b * Gr + r + k) * Gc + c if s == 0 else neg_index[kappa, s - 1, b, r, c])
            w.append(weights[kappa, s, b, r, c])
            y.append(1.0 if s == 0 else -1.0)
        out.append(tuple(np.array(a) for a in (ctx, partner, w, y)))
    return out


def sampled_loss_ref(W, W_pred, x, offsets, neg_index, weights, pool, score, W_retro=None, W_held=None,
                     retro_pairs=None):
    """The sampled loss pair by pair; CLAPP (``W_retro``): the prediction with the context maps, the
    retrodiction with the current maps computed by the constant ``W_held``, on its own pairs ``retro_pairs``
    (default: the prediction's)."""
    B, Gr, Gc = x.shape[:3]
    _, _, q = layer_maps(W, x, 1, 1, pool, score)
    q = q.reshape(B * Gr * Gc, *q.shape[3:])
    q0 = q if W_retro is None else layer_maps(W_held, x, 1, 1, pool, score)[2].reshape(q.shape)
    n_l, total, us = q.shape[1], 0.0, []
    mirror = sampled_pairs(offsets, *(retro_pairs or (neg_index, weights)), Gr, Gc)
    for kappa, (ctx, partner, w, y) in enumerate(sampled_pairs(offsets, neg_index, weights, Gr, Gc)):
        u = np.einsum("plj,ji,pli->pl", q[partner], W_pred[kappa], q0[ctx])
        total += np.sum(w[:, None] / n_l * np.maximum(0.0, 1 - y[:, None] * u))
        us.append(u)
        if W_retro is not None:
            ctx, partner, w, y = mirror[kappa]
            u_r = np.einsum("pli,ij,plj->pl", q[ctx], W_retro[kappa], q0[partner])
            total += np.sum(w[:, None] / n_l * np.maximum(0.0, 1 - y[:, None] * u_r))
            us.append(u_r)
    return total, us


def sample_sampled_layer(seed, pool, score, offsets, rule, n=3):
    """A layer (sample_layer's, ReLU and pool away from their kinks), the authors' draws, random weights
    (CLAPP: a coin per image), an independent W_retro for CLAPP with its own pairs (the mirror pathway's
    draws; ``None`` for CLAPP-s); every sampled margin keeps KINK."""
    for trial in range(200):
        W, W_pred, x, _, _ = sample_layer(seed + trial, 1, 1, pool, score, offsets, B=4, G=4)
        B, Gr, Gc = x.shape[:3]
        rng = np.random.default_rng(seed + trial)
        net = ConvClappStack.init([3], 2, rule, rng, offsets=offsets, sampling="authors")
        neg_index, weights = net.pair_sets(B, Gr, Gc, rng, negatives=n, saccade_prob=0.5)
        weights = weights[0] * rng.uniform(0.5, 1.5, weights[0].shape)
        if rule == "clapp":
            retro_pairs, neg_index, weights = (neg_index[0, 1], weights[1]), neg_index[0, 0], weights[0]
        else:
            retro_pairs, neg_index = None, neg_index[0]
        W_retro = rng.standard_normal(W_pred.shape) * rng.choice([0.3, 1.0, 3.0]) if rule == "clapp" else None
        _, us = sampled_loss_ref(W, W_pred, x, offsets, neg_index, weights, pool, score, W_retro, W, retro_pairs)
        pairs = sampled_pairs(offsets, neg_index, weights, Gr, Gc)
        mirror = sampled_pairs(offsets, *retro_pairs, Gr, Gc) if retro_pairs else []
        ys = [y for kappa in range(len(offsets)) for y in ([pairs[kappa][3]] + ([mirror[kappa][3]] if mirror else []))]
        margins = np.concatenate([(1 - y[:, None] * u).ravel() for y, u in zip(ys, us)])
        if np.abs(margins).min() > KINK and (margins > 0).any() and (margins < 0).any():
            return W, W_pred, W_retro, x, neg_index, weights, retro_pairs
    raise RuntimeError("no sample far from the kinks")


SAMPLED_CONFIGS = [(pool, score, rule) for rule in ("clapp_s", "clapp") for pool, score in
                   [(False, "location"), (True, "location"), (False, "patch"), (True, "patch")]]


@pytest.mark.parametrize("pool, score, rule", SAMPLED_CONFIGS)
def test_sampled_gradients_match_finite_differences(pool, score, rule):
    offsets = (1, 2)
    W, W_pred, W_retro, x, neg_index, weights, retro_pairs = sample_sampled_layer(20, pool, score, offsets, rule)
    kw = dict(pool=pool, score=score, W_retro=W_retro)
    g = conv_clapp_layer(W, W_pred, x, offsets, None, weights, neg_index=neg_index, retro_pairs=retro_pairs, **kw)
    W_held = W.copy()

    def loss(P_W=W, P_pred=W_pred, P_retro=W_retro):
        return sampled_loss_ref(P_W, P_pred, x, offsets, neg_index, weights, pool, score, P_retro, W_held,
                                retro_pairs)[0]

    assert np.isclose(float(g.loss), loss(), rtol=1e-12)
    _, us = sampled_loss_ref(W, W_pred, x, offsets, neg_index, weights, pool, score, W_retro, W_held, retro_pairs)
    step = 1 if W_retro is None else 2
    for kappa in range(len(offsets)):           # u per (set, image, row, column, location), set 0 the positive
        np.testing.assert_allclose(g.u[kappa].reshape(-1, g.u[kappa].shape[-1]), us[step * kappa], rtol=1e-12)
        if W_retro is not None:
            np.testing.assert_allclose(g.u_retro[kappa].reshape(us[2 * kappa + 1].shape), us[2 * kappa + 1],
                                       rtol=1e-12)
    assert rel_err(g.W, fd_grad(lambda P: loss(P_W=P), W.copy())) < 1e-6
    assert rel_err(g.W_pred, fd_grad(lambda P: loss(P_pred=P), W_pred.copy())) < 1e-6
    if W_retro is not None:
        assert rel_err(g.W_retro, fd_grad(lambda P: loss(P_retro=P), W_retro.copy())) < 1e-6
    with pytest.raises(ValueError, match="either shifts"):
        conv_clapp_layer(W, W_pred, x, offsets, [0, 1], weights, neg_index=neg_index, **kw)
    if W_retro is not None:                      # the mirror's own pairs are another loss than the shared ones
        shared = conv_clapp_layer(W, W_pred, x, offsets, None, weights, neg_index=neg_index, **kw)
        assert not np.isclose(float(shared.loss), float(g.loss)) and rel_err(shared.W_retro, g.W_retro) > 1e-3
        np.testing.assert_allclose(shared.W_pred, g.W_pred, rtol=1e-12)   # the prediction's are the same
        with pytest.raises(ValueError, match="pass neg_index too"):
            conv_clapp_layer(W, W_pred, x, offsets, [0, 1], weights, retro_pairs=retro_pairs, **kw)
    else:
        with pytest.raises(ValueError, match="CLAPP \\(W_retro\\) only"):
            conv_clapp_layer(W, W_pred, x, offsets, None, weights, neg_index=neg_index, pool=pool, score=score,
                             retro_pairs=(neg_index, weights))


@pytest.mark.torch
@pytest.mark.parametrize("pool, score, rule", SAMPLED_CONFIGS)
def test_sampled_gradients_match_torch_autograd(pool, score, rule):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    offsets = (1, 2)
    W, W_pred, W_retro, x, neg_index, weights, retro_pairs = sample_sampled_layer(40, pool, score, offsets, rule)
    g = conv_clapp_layer(W, W_pred, x, offsets, None, weights, neg_index=neg_index, pool=pool, score=score,
                         W_retro=W_retro, retro_pairs=retro_pairs)
    B, Gr, Gc = x.shape[:3]
    tW, tWp = torch.tensor(W, requires_grad=True), torch.tensor(W_pred, requires_grad=True)
    tWr = None if W_retro is None else torch.tensor(W_retro, requires_grad=True)
    h = torch.tensor(x.reshape(-1, *x.shape[3:])).permute(0, 3, 1, 2)
    z = torch.relu(F.conv2d(h, tW.permute(0, 3, 1, 2), padding=1))
    if pool:
        z = F.max_pool2d(z, 2)
    z = z.mean(dim=(2, 3), keepdim=True) if score == "patch" else z
    q = z.permute(0, 2, 3, 1).reshape(B * Gr * Gc, -1, W.shape[0])
    qd = q.detach()
    loss = 0
    mirror = sampled_pairs(offsets, *retro_pairs, Gr, Gc) if retro_pairs else None
    for kappa, (ctx, partner, w, y) in enumerate(sampled_pairs(offsets, neg_index, weights, Gr, Gc)):
        w, y = torch.tensor(w)[:, None] / q.shape[1], torch.tensor(y)[:, None]
        c = q[ctx] if tWr is None else qd[ctx]                       # CLAPP: the prediction holds c fixed
        u = (q[partner] * (c @ tWp[kappa].T)).sum(-1)
        loss = loss + (w * torch.relu(1 - y * u)).sum()
        if tWr is not None:                                          # ... and the retrodiction z, on its own pairs
            ctx, partner, w, y = mirror[kappa]
            w, y = torch.tensor(w)[:, None] / q.shape[1], torch.tensor(y)[:, None]
            u_r = (q[ctx] * (qd[partner] @ tWr[kappa].T)).sum(-1)
            loss = loss + (w * torch.relu(1 - y * u_r)).sum()
    loss.backward()
    assert np.isclose(float(g.loss), loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g.W, tW.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.W_pred, tWp.grad.numpy(), rtol=1e-10, atol=1e-13)
    if tWr is not None:
        np.testing.assert_allclose(g.W_retro, tWr.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_small_stack_learns_with_the_authors_sampling(rule):
    """A few Adam steps on one batch and one draw of pairs lower every layer's loss."""
    from neuroplastic.engines.numpy.optim import Adam
    rng = np.random.default_rng(5)
    images = np.cumsum(np.cumsum(rng.standard_normal((8, 24, 24)), 1), 2).astype(np.float32)   # smooth images
    images = (images - images.mean()) / images.std()
    x = patch_grid(images, 8, 4)[..., 0]
    net = ConvClappStack.init([8, "M", 8], 1, rule, rng, offsets=(1, 2), sampling="authors")
    opt = Adam(1e-2)
    index, w = net.pair_sets(8, 5, 5, rng, negatives=3, saccade_prob=0.5)
    first = net.train_batch(x, opt, index, w)
    for _ in range(20):
        last = net.train_batch(x, opt, index, w)
    assert all(0 < m <= 1 for m in first.modulated)
    assert all(b < 0.9 * a for a, b in zip(first.loss, last.loss)), (first.loss, last.loss)
