"""Correctness of the explicit CLAPP / CLAPP-s rules (science page of the docs, CLAPP).

* the explicit gradients are the gradients of the returned loss (central finite
  differences, float64), *including* the retrodiction term (context path through W);
* ``clapp_sequences`` is ``clapp_pairs`` on the explicitly concatenated pairs;
* CLAPP with ``W_retro = W_pred^T`` is CLAPP-s;
* a two-layer ``ClappStack`` step equals torch autograd of the per-layer losses
  (inputs detached) and our Adam equals ``torch.optim.Adam``;
* a tiny example whose numbers are worked out by hand;
* CLAPP with an independent ``W_retro``: its explicit gradients equal finite differences and torch
  autograd of the asymmetric loss (each pathway holds the other side of the pair fixed), for pairs
  and for sequences with both pairings; ``W_retro`` learns without collapsing onto ``W_pred^T``, and
  one started at ``W_pred^T`` stays there; runs record ``retro_distance``.
"""
import numpy as np
import pytest

from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.optim import SGD, Adam
from neuroplastic.rules import clapp_pairs, clapp_sequences, forward, retro_distance
from helpers import fd_grad, rel_err

KINK = 1e-3     # distance every ReLU input and hinge margin keeps from its kink in the FD tests


# ---------------------------------------------------------------------------------------------
# helpers

def pair_rows(x, shifts, weights):
    """The pairs of clapp_sequences written out: rows (x_cur, x_prev, y, weight), set by set."""
    B, T, _ = x.shape
    cur, prev, y, w = [], [], [], []
    for s, shift in enumerate(shifts):
        for b in range(B):
            for t in range(T - 1):
                cur.append(x[(b - shift) % B, t + 1])     # the current glimpse comes from sequence b - shift
                prev.append(x[b, t])                      # the context is glimpse t of sequence b
                y.append(1.0 if shift % B == 0 else -1.0)
                w.append(weights[s, b, t])
    return np.array(cur), np.array(prev), np.array(y), np.array(w)


def far_from_kinks(W, W_pred, xs, margins):
    drives = [x @ W.T for x in xs]
    return min(np.abs(a).min() for a in drives) > KINK and np.abs(margins).min() > KINK


def sample_pairs(seed, n_in=7, n_out=5, n_rows=8):
    """A random layer and rows of pairs, half positive, with every kink at least KINK away
    and both active and inactive hinges among the positives and among the negatives."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        W = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        W_pred = rng.standard_normal((n_out, n_out)) * 0.5
        x, x_prev = rng.standard_normal((2, n_rows, n_in))
        y = np.where(np.arange(n_rows) % 2 == 0, 1.0, -1.0)
        g = clapp_pairs(W, W_pred, x, x_prev, y)
        margin = 1 - y * g.u
        act = margin > 0
        if (far_from_kinks(W, W_pred, [x, x_prev], margin)
                and all(act[y == s].any() and (~act[y == s]).any() for s in (1.0, -1.0))):
            return W, W_pred, x, x_prev, y
    raise RuntimeError("no sample far from the kinks")


def sample_sequences(seed, B=4, T=5, n_in=7, n_out=5, shifts=(0, 1, 3)):
    """A random layer and B sequences of T glimpses, kinks at least KINK away, mixed hinge activity."""
    rng = np.random.default_rng(seed)
    weights = np.full((len(shifts), B, T - 1), 1.0 / (B * (T - 1)))
    for _ in range(1000):
        W = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        W_pred = rng.standard_normal((n_out, n_out)) * 0.5
        x = rng.standard_normal((B, T, n_in))
        g = clapp_sequences(W, W_pred, x, shifts, weights)
        y = np.array([1.0 if s % B == 0 else -1.0 for s in shifts])[:, None, None]
        margin = 1 - y * g.u
        act = margin > 0
        if far_from_kinks(W, W_pred, [x], margin) and act.any() and (~act).any() and act[1:].any():
            return W, W_pred, x, list(shifts), weights
    raise RuntimeError("no sample far from the kinks")


def seq_loss_ref(W, W_pred, x, shifts, weights, W_ctx=None):
    """Independent loss of clapp_sequences; W_ctx (if given) computes the context, held constant."""
    B = x.shape[0]
    z = np.maximum(x @ W.T, 0)
    c = np.maximum(x @ (W if W_ctx is None else W_ctx).T, 0)[:, :-1]
    total = 0.0
    for s, shift in enumerate(shifts):
        y = 1.0 if shift % B == 0 else -1.0
        for b in range(B):
            for t in range(x.shape[1] - 1):
                u = z[(b - shift) % B, t + 1] @ W_pred @ c[b, t]
                total += weights[s, b, t] * max(0.0, 1 - y * u)
    return total


# ---------------------------------------------------------------------------------------------
# 1. explicit gradients = finite differences of the loss, and the retrodiction term matters

@pytest.mark.parametrize("seed", [0, 1])
def test_clapp_pairs_gradients_match_finite_differences(seed):
    W, W_pred, x, x_prev, y = sample_pairs(seed)
    g = clapp_pairs(W, W_pred, x, x_prev, y)
    fd_W = fd_grad(lambda P: float(clapp_pairs(P, W_pred, x, x_prev, y).loss), W.copy())
    fd_Wp = fd_grad(lambda P: float(clapp_pairs(W, P, x, x_prev, y).loss), W_pred.copy())
    assert rel_err(g.W, fd_W) < 1e-6
    assert rel_err(g.W_pred, fd_Wp) < 1e-6

    # The gradient with the context c held constant (no retrodiction term) is a different
    # vector, and the explicit rule does not equal it: the retrodiction term is there.
    prev0 = forward(W, x_prev)
    fd_W_no_retro = fd_grad(lambda P: float(clapp_pairs(P, W_pred, x, x_prev, y, prev=prev0).loss), W.copy())
    assert rel_err(g.W, fd_W_no_retro) > 1e-2
    # ... and it is exactly what is left when the retrodiction is switched off (W_retro = 0).
    g0 = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=np.zeros_like(W_pred))
    assert rel_err(g0.W, fd_W_no_retro) < 1e-6
    assert rel_err(g.W - g0.W, fd_W - fd_W_no_retro) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_clapp_sequences_gradients_match_finite_differences(seed):
    W, W_pred, x, shifts, weights = sample_sequences(seed)
    g = clapp_sequences(W, W_pred, x, shifts, weights)
    assert g.W_retro is None
    assert np.isclose(float(g.loss), seq_loss_ref(W, W_pred, x, shifts, weights), rtol=1e-12)
    fd_W = fd_grad(lambda P: float(clapp_sequences(P, W_pred, x, shifts, weights).loss), W.copy())
    fd_Wp = fd_grad(lambda P: float(clapp_sequences(W, P, x, shifts, weights).loss), W_pred.copy())
    assert rel_err(g.W, fd_W) < 1e-6
    assert rel_err(g.W_pred, fd_Wp) < 1e-6

    fd_W_no_retro = fd_grad(lambda P: seq_loss_ref(P, W_pred, x, shifts, weights, W_ctx=W), W.copy())
    assert rel_err(g.W, fd_W_no_retro) > 1e-2
    g0 = clapp_sequences(W, W_pred, x, shifts, weights, W_retro=np.zeros_like(W_pred))
    assert rel_err(g0.W, fd_W_no_retro) < 1e-6


# ---------------------------------------------------------------------------------------------
# 2. clapp_sequences = clapp_pairs on the concatenated pairs

def _compare_sequences_to_pairs(W, W_pred, x, shifts, weights, W_retro):
    gs = clapp_sequences(W, W_pred, x, shifts, weights, W_retro=W_retro)
    cur, prev, y, w = pair_rows(x, shifts, weights)
    gp = clapp_pairs(W, W_pred, cur, prev, y, W_retro=W_retro, weights=w)
    S, B, T1 = weights.shape
    np.testing.assert_allclose(gs.loss, gp.loss, rtol=1e-12)
    np.testing.assert_allclose(gs.u, gp.u.reshape(S, B, T1), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(gs.gamma, gp.gamma.reshape(S, B, T1))
    for name in ("W", "W_pred") + (("W_retro",) if W_retro is not None else ()):
        np.testing.assert_allclose(getattr(gs, name), getattr(gp, name), rtol=1e-11, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(gs.z, forward(W, x).z, rtol=1e-14)
    assert (gs.W_retro is None) == (W_retro is None)
    # Rows of weight 0 contribute nothing: dropping them from the pair list changes nothing.
    keep = w > 0
    gk = clapp_pairs(W, W_pred, cur[keep], prev[keep], y[keep], W_retro=W_retro, weights=w[keep])
    np.testing.assert_allclose(gs.loss, gk.loss, rtol=1e-12)
    for name in ("W", "W_pred") + (("W_retro",) if W_retro is not None else ()):
        np.testing.assert_allclose(getattr(gs, name), getattr(gk, name), rtol=1e-11, atol=1e-14, err_msg=name)
    return gs


@pytest.mark.parametrize("retro", [False, True])
def test_sequences_equal_concatenated_pairs_contrastive(retro):
    rng = np.random.default_rng(3)
    B, T, n_in, n = 5, 4, 6, 4
    W = rng.standard_normal((n, n_in)) / np.sqrt(n_in)
    W_pred = rng.standard_normal((n, n)) * 0.5
    W_retro = rng.standard_normal((n, n)) * 0.5 if retro else None
    x = rng.standard_normal((B, T, n_in))
    shifts = [0, 2, 4, 1]
    weights = rng.uniform(0.5, 1.5, (len(shifts), B, T - 1)) / (B * (T - 1))
    gs = _compare_sequences_to_pairs(W, W_pred, x, shifts, weights, W_retro)
    assert (gs.gamma != 0).any() and (gs.gamma == 0).any()


@pytest.mark.parametrize("retro", [False, True])
def test_sequences_equal_concatenated_pairs_stochastic_masking(retro):
    """CLAPP's pairing: per step either the fixation or the saccade set keeps the row (weights mask rows)."""
    rng = np.random.default_rng(4)
    B, T, n_in, n = 4, 6, 5, 3
    W = rng.standard_normal((n, n_in)) / np.sqrt(n_in)
    W_pred = rng.standard_normal((n, n)) * 0.7
    W_retro = rng.standard_normal((n, n)) * 0.7 if retro else None
    x = rng.standard_normal((B, T, n_in))
    net = ClappStack.init([n_in, n], "clapp", rng)
    shifts, weights = net.pair_sets(B, T, rng, negatives=1, saccade_prob=0.5)
    assert shifts[0] == 0 and shifts[1] % B != 0
    assert ((weights > 0).sum(axis=0) == 1).all()          # exactly one set per row
    assert (weights[0] > 0).any() and (weights[1] > 0).any()
    _compare_sequences_to_pairs(W, W_pred, x, shifts, weights, W_retro)


# ---------------------------------------------------------------------------------------------
# 3. CLAPP with W_retro = W_pred^T is CLAPP-s

def test_clapp_with_transposed_retro_is_clapp_s():
    W, W_pred, x, x_prev, y = sample_pairs(5)
    s = clapp_pairs(W, W_pred, x, x_prev, y)
    c = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=W_pred.T.copy())
    np.testing.assert_allclose(c.W, s.W, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.W_pred, s.W_pred, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.W_retro, s.W_pred.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(c.gamma_retro, s.gamma)       # the two scores agree, so do the gates
    np.testing.assert_allclose(float(c.loss), 2 * float(s.loss), rtol=1e-13)   # both pathways count
    assert s.gamma_retro is None and s.u_retro is None
    # a W_retro that differs from W_pred^T changes the W gradient (the test above is not vacuous)
    other = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=W_pred.T + 0.3)
    assert rel_err(other.W, s.W) > 1e-3

    W, W_pred, x, shifts, weights = sample_sequences(6)
    s = clapp_sequences(W, W_pred, x, shifts, weights)
    c = clapp_sequences(W, W_pred, x, shifts, weights, W_retro=W_pred.T.copy())
    np.testing.assert_allclose(c.W, s.W, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.W_pred, s.W_pred, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.W_retro, s.W_pred.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(c.gamma_retro, s.gamma)
    np.testing.assert_allclose(float(c.loss), 2 * float(s.loss), rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# 4. torch autograd and torch.optim.Adam

class _Recorder:
    """An optimiser that only records the gradients it is given."""

    def step(self, params, grads):
        self.grads = {k: v.copy() for k, v in grads.items()}


def _torch_layer_losses(torch, params, x, shifts, weights, n_layers, detach=True):
    """The per-layer CLAPP-s hinge losses in torch, every layer's input detached (unless told)."""
    B = x.shape[0]
    losses, h = [], x
    for l in range(n_layers):
        W, Wp = params[f"{l + 1}/W"], params[f"{l + 1}/W_pred"]
        h = h.detach() if detach else h
        z = torch.relu(h @ W.T)
        d = z[:, :-1] @ Wp.T
        loss = 0.0
        for s, shift in enumerate(shifts):
            y = 1.0 if shift % B == 0 else -1.0
            u = (torch.roll(z[:, 1:], shift, dims=0) * d).sum(-1)
            loss = loss + (weights[s] * torch.relu(1 - y * u)).sum()
        losses.append(loss)
        h = z
    return losses


@pytest.mark.torch
def test_two_layer_stack_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    B, T = 6, 5
    net = ClappStack.init([9, 8, 6], "clapp_s", rng, dtype="float64", init_scale=2.0, pred_init_scale=3.0)
    x = np.abs(rng.standard_normal((B, T, 9)))
    shifts, weights = net.pair_sets(B, T, rng, negatives=2, saccade_prob=0.5)
    params0 = {k: v.copy() for k, v in net.params.items()}
    rec = _Recorder()
    stats = net.train_batch(x, rec, shifts, weights)
    assert all(0 < m < 1 for m in stats.modulated)           # some pairs modulated, some not, in each layer

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    losses = _torch_layer_losses(torch, tp, torch.tensor(x), shifts, torch.tensor(weights), net.n_layers)
    sum(losses).backward()                 # inputs detached: each layer only gets its own loss's gradient
    np.testing.assert_allclose(stats.loss, [v.item() for v in losses], rtol=1e-12)
    assert set(rec.grads) == set(tp)
    for k, t in tp.items():
        np.testing.assert_allclose(rec.grads[k], t.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)
    # the detach matters: layer 1's gradient from layer 2's loss is non-zero, and we do not include it
    tp2 = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    l2 = _torch_layer_losses(torch, tp2, torch.tensor(x), shifts, torch.tensor(weights), 2, detach=False)[1]
    g_cross = torch.autograd.grad(l2, tp2["1/W"])[0]
    assert g_cross.abs().max() > 1e-3

    # Adam: three steps on different gradients (bias correction over t) equal torch.optim.Adam
    ours = {k: v.copy() for k, v in params0.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    opt_ours, opt_torch = Adam(1e-2), torch.optim.Adam(list(theirs.values()), lr=1e-2)
    for scale in (1.0, -0.5, 3.0):
        before = {k: v.copy() for k, v in ours.items()}
        grads = {k: scale * g for k, g in rec.grads.items()}
        opt_ours.step(ours, grads)
        for k, t in theirs.items():
            t.grad = torch.tensor(grads[k])
        opt_torch.step()
        for k, t in theirs.items():
            np.testing.assert_allclose(ours[k] - before[k], t.detach().numpy() - before[k],
                                       rtol=1e-9, atol=1e-15, err_msg=k)


# ---------------------------------------------------------------------------------------------
# 5. a tiny example worked out by hand

# n_in = 2, n_out = 2.  W = [[1, -1], [-1, 0.5]], W_pred = [[0.5, 0.25], [1, -1]]
# current  x      = [3, 1]:  a = [2, -2.5]   z = [2, 0]   rho'(a) = [1, 0]
# context  x_prev = [1, 4]:  a = [-3, 1]     c = [0, 1]   rho'(a) = [0, 1]
# d = W_pred c = [0.25, -1];  u = z . d = 0.5;  r = W_pred^T z = [1, 0.5]
# Hebbian bracket  (d * rho'(a)) x^T + (r * rho'(a_prev)) x_prev^T
#     = [[0.25*3, 0.25*1], [0, 0]] + [[0, 0], [0.5*1, 0.5*4]] = [[0.75, 0.25], [0.5, 2]]
# z c^T = [[0, 2], [0, 0]]
W_HAND = np.array([[1.0, -1.0], [-1.0, 0.5]])
WP_HAND = np.array([[0.5, 0.25], [1.0, -1.0]])
X_HAND = np.array([[3.0, 1.0]])
XP_HAND = np.array([[1.0, 4.0]])
BRACKET = np.array([[0.75, 0.25], [0.5, 2.0]])
ZC = np.array([[0.0, 2.0], [0.0, 0.0]])
ETA = 0.1


@pytest.mark.parametrize("y, gamma, loss", [(+1.0, +1.0, 0.5),     # fixation: margin 1 - 0.5 = 0.5 > 0
                                            (-1.0, -1.0, 1.5)])    # saccade:  margin 1 + 0.5 = 1.5 > 0
def test_hand_example_active(y, gamma, loss):
    g = clapp_pairs(W_HAND, WP_HAND, X_HAND, XP_HAND, np.array([y]))
    assert g.u.tolist() == [0.5]
    assert g.gamma.tolist() == [gamma]
    assert float(g.loss) == loss
    np.testing.assert_allclose(g.W, -gamma * BRACKET, rtol=1e-15)
    np.testing.assert_allclose(g.W_pred, -gamma * ZC, rtol=1e-15)
    np.testing.assert_allclose(g.z, [[2.0, 0.0]])
    # the Hebbian update of the paper: Delta W = eta gamma [...], Delta W_pred = eta gamma z c^T
    params = {"W": W_HAND.copy(), "W_pred": WP_HAND.copy()}
    SGD(ETA).step(params, {"W": g.W, "W_pred": g.W_pred})
    expect_dW = {+1.0: [[0.075, 0.025], [0.05, 0.2]], -1.0: [[-0.075, -0.025], [-0.05, -0.2]]}[y]
    expect_dWp = {+1.0: [[0.0, 0.2], [0.0, 0.0]], -1.0: [[0.0, -0.2], [0.0, 0.0]]}[y]
    np.testing.assert_allclose(params["W"] - W_HAND, expect_dW, atol=1e-15)
    np.testing.assert_allclose(params["W_pred"] - WP_HAND, expect_dWp, atol=1e-15)


@pytest.mark.parametrize("scale, y", [(4.0, +1.0),     # u = 2:     fixation margin 1 - 2 = -1
                                      (-4.0, -1.0),    # u = -2:    saccade margin 1 - 2 = -1
                                      (2.5, +1.0),     # u = 1.25:  fixation margin -0.25
                                      (2.0, +1.0)])    # u = 1:     margin exactly 0, Theta(0) = 0 as in autograd
def test_hand_example_inactive_hinge(scale, y):
    g = clapp_pairs(W_HAND, scale * WP_HAND, X_HAND, XP_HAND, np.array([y]))
    assert g.u.tolist() == [0.5 * scale]
    assert g.gamma.tolist() == [0.0]
    assert float(g.loss) == 0.0
    assert not g.W.any() and not g.W_pred.any()


# CLAPP with W_retro = [[0, 0], [1, 0]] (not W_pred^T = [[0.5, 1], [0.25, -1]]):
# r = W_retro z = [0, 1*2] = [0, 2];  u_r = c . r = 0*0 + 1*2 = 2  (the prediction's u is still 0.5)
# retrodiction bracket (r * rho'(a_prev)) x_prev^T = [0, 2*1]^T [1, 4] = [[0, 0], [2, 8]]
# prediction bracket   (d * rho'(a)) x^T          = [0.25*1, -1*0]^T [3, 1] = [[0.75, 0.25], [0, 0]]
# c z^T = [0, 1]^T [2, 0] = [[0, 0], [2, 0]]
RETRO_HAND = np.array([[0.0, 0.0], [1.0, 0.0]])
PRED_BRACKET = np.array([[0.75, 0.25], [0.0, 0.0]])
RETRO_BRACKET = np.array([[0.0, 0.0], [2.0, 8.0]])
CZ = np.array([[0.0, 0.0], [2.0, 0.0]])


@pytest.mark.parametrize("y, gamma, gamma_r, loss", [
    # fixation: margin 1 - 0.5 = 0.5 > 0, gamma = 1; retro margin 1 - 2 = -1, gamma_r = 0; loss 0.5 + 0
    (+1.0, +1.0, 0.0, 0.5),
    # saccade: margin 1 + 0.5 = 1.5, gamma = -1; retro margin 1 + 2 = 3, gamma_r = -1; loss 1.5 + 3
    (-1.0, -1.0, -1.0, 4.5)])
def test_hand_example_clapp_retro(y, gamma, gamma_r, loss):
    g = clapp_pairs(W_HAND, WP_HAND, X_HAND, XP_HAND, np.array([y]), W_retro=RETRO_HAND)
    assert g.u.tolist() == [0.5] and g.u_retro.tolist() == [2.0]
    assert g.gamma.tolist() == [gamma] and g.gamma_retro.tolist() == [gamma_r]
    assert float(g.loss) == loss
    # grad W = -(gamma * prediction bracket + gamma_r * retrodiction bracket): fixation -[[0.75, 0.25], [0, 0]]
    # (the retrodiction is satisfied), saccade +[[0.75, 0.25], [2, 8]]
    np.testing.assert_allclose(g.W, -(gamma * PRED_BRACKET + gamma_r * RETRO_BRACKET), rtol=1e-15)
    np.testing.assert_allclose(g.W_pred, -gamma * ZC, rtol=1e-15)            # z c^T, gated by gamma
    np.testing.assert_allclose(g.W_retro, -gamma_r * CZ, rtol=1e-15)         # c z^T, gated by gamma_r


def test_hand_example_mean_of_fixation_and_saccade():
    # The same pair as a fixation and as a saccade, averaged: losses (0.5 + 1.5) / 2, updates cancel.
    g2 = clapp_pairs(W_HAND, WP_HAND, np.vstack([X_HAND, X_HAND]), np.vstack([XP_HAND, XP_HAND]),
                     np.array([1.0, -1.0]))
    assert float(g2.loss) == 1.0
    assert not g2.W.any() and not g2.W_pred.any()


def test_hand_example_relu_kink():
    # n_out = 1: W = [[1, -1]], x = [1, 1] gives a = 0 exactly, so z = 0 and rho'(0) = 0 (as autograd);
    # x_prev = [2, 1]: c = 1, d = W_pred c = 1, u = 0, fixation margin 1 > 0, gamma = 1.
    # Delta W = gamma [d rho'(0) x + r rho'(1) x_prev] with r = W_pred^T z = 0, so no update at all,
    # although the hinge is active (a rule with rho'(0) = 1 would give -[1, 1]).
    g = clapp_pairs(np.array([[1.0, -1.0]]), np.array([[1.0]]), np.array([[1.0, 1.0]]),
                    np.array([[2.0, 1.0]]), np.array([1.0]))
    assert g.u.tolist() == [0.0] and g.gamma.tolist() == [1.0] and float(g.loss) == 1.0
    assert not g.W.any() and not g.W_pred.any()


# ---------------------------------------------------------------------------------------------
# 6. CLAPP: an independent W_retro with its own score and gate

def asym_pairs_loss(W, W_pred, W_retro, x, x_prev, y, w, W_held):
    """CLAPP's loss written out: the prediction pathway scores z . (W_pred c) with the context c computed
    by the constant ``W_held``, the retrodiction pathway c . (W_retro z) with the current z computed by it."""
    z, c = np.maximum(x @ W.T, 0), np.maximum(x_prev @ W.T, 0)
    z0, c0 = np.maximum(x @ W_held.T, 0), np.maximum(x_prev @ W_held.T, 0)
    u = np.einsum("ni,ij,nj->n", z, W_pred, c0)
    u_r = np.einsum("ni,ij,nj->n", c, W_retro, z0)
    return float(np.sum(w * np.maximum(0, 1 - y * u)) + np.sum(w * np.maximum(0, 1 - y * u_r)))


def asym_seq_loss(W, W_pred, W_retro, x, shifts, weights, W_held):
    """The same for clapp_sequences, pair by pair (the context is glimpse t of sequence b)."""
    B, T = x.shape[:2]
    z, z0 = np.maximum(x @ W.T, 0), np.maximum(x @ W_held.T, 0)
    total = 0.0
    for s, shift in enumerate(shifts):
        y = 1.0 if shift % B == 0 else -1.0
        for b in range(B):
            for t in range(T - 1):
                u = z[(b - shift) % B, t + 1] @ W_pred @ z0[b, t]
                u_r = z[b, t] @ W_retro @ z0[(b - shift) % B, t + 1]
                total += weights[s, b, t] * (max(0.0, 1 - y * u) + max(0.0, 1 - y * u_r))
    return total


def _mixed(gamma, gamma_r, active):
    """Both gates take both values on the active rows, and they disagree somewhere (the test is not CLAPP-s)."""
    g, gr = gamma[active], gamma_r[active]
    return (g != 0).any() and (g == 0).any() and (gr != 0).any() and (gr == 0).any() and (g != gr).any()


def sample_pairs_retro(seed):
    """sample_pairs with an independent W_retro whose margins also keep KINK from the kink."""
    W, W_pred, x, x_prev, y = sample_pairs(seed)
    rng = np.random.default_rng(100 + seed)
    for _ in range(1000):
        W_retro = rng.standard_normal(W_pred.shape) * rng.choice([0.3, 0.5, 1.0])
        g = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=W_retro)
        if np.abs(1 - y * g.u_retro).min() > KINK and _mixed(g.gamma, g.gamma_retro, np.ones(len(y), bool)):
            return W, W_pred, W_retro, x, x_prev, y
    raise RuntimeError("no sample far from the kinks")


def sample_sequences_retro(seed, pairing, B=4, T=5, n_in=7, n_out=5):
    """A layer with an independent W_retro and B sequences, pairs drawn as ``pairing`` draws them
    (contrastive: a positive and two saccade sets; stochastic: CLAPP's one set per row), kinks KINK away."""
    rng = np.random.default_rng(seed)
    net = ClappStack.init([n_in, n_out], "clapp", rng)
    for _ in range(1000):
        if pairing == "contrastive":
            shifts = [0, 1, 3]
            weights = rng.uniform(0.5, 1.5, (3, B, T - 1)) / (B * (T - 1))
        else:
            shifts, weights = net.pair_sets(B, T, rng, negatives=1, saccade_prob=0.5)
        W = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        W_pred, W_retro = rng.standard_normal((2, n_out, n_out)) * rng.choice([0.3, 0.5, 1.0], size=(2, 1, 1))
        x = rng.standard_normal((B, T, n_in))
        g = clapp_sequences(W, W_pred, x, shifts, weights, W_retro=W_retro)
        y = np.array([1.0 if s % B == 0 else -1.0 for s in shifts])[:, None, None]
        margins = np.concatenate([(1 - y * g.u).ravel(), (1 - y * g.u_retro).ravel()])
        if far_from_kinks(W, W_pred, [x], margins) and _mixed(g.gamma, g.gamma_retro, weights > 0):
            return W, W_pred, W_retro, x, shifts, weights
    raise RuntimeError("no sample far from the kinks")


@pytest.mark.parametrize("seed", [0, 1])
def test_clapp_pairs_with_w_retro_match_finite_differences(seed):
    W, W_pred, W_retro, x, x_prev, y = sample_pairs_retro(seed)
    w = np.full(len(y), 1.0 / len(y))
    g = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=W_retro)
    assert np.isclose(float(g.loss), asym_pairs_loss(W, W_pred, W_retro, x, x_prev, y, w, W), rtol=1e-12)
    c = np.maximum(x_prev @ W.T, 0)
    np.testing.assert_allclose(g.u_retro, np.einsum("ni,ij,nj->n", c, W_retro, g.z), rtol=1e-12)
    W_held = W.copy()
    fd_W = fd_grad(lambda P: asym_pairs_loss(P, W_pred, W_retro, x, x_prev, y, w, W_held), W.copy())
    fd_Wp = fd_grad(lambda P: asym_pairs_loss(W, P, W_retro, x, x_prev, y, w, W_held), W_pred.copy())
    fd_Wr = fd_grad(lambda P: asym_pairs_loss(W, W_pred, P, x, x_prev, y, w, W_held), W_retro.copy())
    assert rel_err(g.W, fd_W) < 1e-6
    assert rel_err(g.W_pred, fd_Wp) < 1e-6
    assert rel_err(g.W_retro, fd_Wr) < 1e-6
    # mutation check: gating the retrodiction with the prediction's gamma (the old rule) fails
    old = (-(g.gamma / len(y))[:, None] * c).T @ g.z
    assert rel_err(old, fd_Wr) > 1e-2


@pytest.mark.parametrize("pairing", ["contrastive", "stochastic"])
def test_clapp_sequences_with_w_retro_match_finite_differences(pairing):
    W, W_pred, W_retro, x, shifts, weights = sample_sequences_retro(2, pairing)
    g = clapp_sequences(W, W_pred, x, shifts, weights, W_retro=W_retro)
    assert g.u_retro.shape == g.gamma_retro.shape == weights.shape
    assert np.isclose(float(g.loss), asym_seq_loss(W, W_pred, W_retro, x, shifts, weights, W), rtol=1e-12)
    W_held = W.copy()
    fd_W = fd_grad(lambda P: asym_seq_loss(P, W_pred, W_retro, x, shifts, weights, W_held), W.copy())
    fd_Wp = fd_grad(lambda P: asym_seq_loss(W, P, W_retro, x, shifts, weights, W_held), W_pred.copy())
    fd_Wr = fd_grad(lambda P: asym_seq_loss(W, W_pred, P, x, shifts, weights, W_held), W_retro.copy())
    assert rel_err(g.W, fd_W) < 1e-6
    assert rel_err(g.W_pred, fd_Wp) < 1e-6
    assert rel_err(g.W_retro, fd_Wr) < 1e-6
    assert rel_err(g.W_retro, g.W_pred.T) > 1e-2          # not the transpose of W_pred's gradient


def _torch_clapp_losses(torch, params, x, shifts, weights, n_layers):
    """CLAPP per layer as the authors write it: loss(z, c.detach()) with W_pred plus the mirror
    loss_mirror(z.detach(), c) with its own matrix W_pred2 = W_retro^T, both scoring z . (M c);
    every layer's input detached."""
    B = x.shape[0]
    losses, h = [], x
    for l in range(n_layers):
        W, Wp, Wp2 = (params[f"{l + 1}/{k}"] for k in ("W", "W_pred", "W_pred2"))
        z = torch.relu(h.detach() @ W.T)
        cur, ctx = z[:, 1:], z[:, :-1]
        loss = 0.0
        for s, shift in enumerate(shifts):
            y = 1.0 if shift % B == 0 else -1.0
            z_s = torch.roll(cur, shift, dims=0)
            u = (z_s * (ctx.detach() @ Wp.T)).sum(-1)
            u_mirror = (z_s.detach() * (ctx @ Wp2.T)).sum(-1)
            loss = loss + (weights[s] * (torch.relu(1 - y * u) + torch.relu(1 - y * u_mirror))).sum()
        losses.append(loss)
        h = z
    return losses


@pytest.mark.torch
def test_clapp_pairs_with_w_retro_match_torch_autograd():
    torch = pytest.importorskip("torch")
    W, W_pred, W_retro, x, x_prev, y = sample_pairs_retro(3)
    g = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=W_retro)
    tW, tWp, tWp2 = (torch.tensor(a, requires_grad=True) for a in (W, W_pred, W_retro.T.copy()))
    z, c = torch.relu(torch.tensor(x) @ tW.T), torch.relu(torch.tensor(x_prev) @ tW.T)
    ty = torch.tensor(y)
    loss = (torch.relu(1 - ty * (z * (c.detach() @ tWp.T)).sum(-1))
            + torch.relu(1 - ty * (z.detach() * (c @ tWp2.T)).sum(-1))).mean()
    loss.backward()
    assert np.isclose(float(g.loss), loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g.W, tW.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.W_pred, tWp.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.W_retro, tWp2.grad.numpy().T, rtol=1e-10, atol=1e-13)


@pytest.mark.torch
@pytest.mark.parametrize("pairing", ["contrastive", "stochastic"])
def test_two_layer_clapp_stack_matches_torch_autograd(pairing):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    B, T = 6, 5
    net = ClappStack.init([9, 8, 6], "clapp", rng, dtype="float64", init_scale=2.0, pred_init_scale=3.0)
    x = np.abs(rng.standard_normal((B, T, 9)))
    if pairing == "contrastive":
        shifts, weights = [0, 2, 5], np.full((3, B, T - 1), 1.0 / (B * (T - 1)))
    else:
        shifts, weights = net.pair_sets(B, T, rng, negatives=1, saccade_prob=0.5)
    params0 = {k: v.copy() for k, v in net.params.items()}
    rec = _Recorder()
    stats = net.train_batch(x, rec, shifts, weights)
    assert all(0 < m < 1 for m in stats.modulated)
    tp = {k.replace("W_retro", "W_pred2"): torch.tensor(v.T.copy() if k.endswith("W_retro") else v, requires_grad=True)
          for k, v in params0.items()}
    losses = _torch_clapp_losses(torch, tp, torch.tensor(x), shifts, torch.tensor(weights), net.n_layers)
    sum(losses).backward()
    np.testing.assert_allclose(stats.loss, [v.item() for v in losses], rtol=1e-12)
    assert set(rec.grads) == set(params0)
    for k in params0:
        theirs = tp[k.replace("W_retro", "W_pred2")].grad.numpy()
        np.testing.assert_allclose(rec.grads[k], theirs.T if k.endswith("W_retro") else theirs,
                                   rtol=1e-10, atol=1e-13, err_msg=k)
        assert np.abs(rec.grads[k]).max() > 1e-6, k


def _distances(net):
    return np.array([retro_distance(net.params[f"{l + 1}/W_pred"], net.params[f"{l + 1}/W_retro"])
                     for l in range(net.n_layers)])


def test_retro_distance():
    rng = np.random.default_rng(10)
    Wp, Wr = rng.standard_normal((2, 2, 4, 4))
    assert retro_distance(Wp, Wp.transpose(0, 2, 1)) == 0.0
    assert np.isclose(retro_distance(Wp, Wr), np.linalg.norm(Wr - Wp.transpose(0, 2, 1)) / np.linalg.norm(Wp))
    assert np.isclose(retro_distance(Wp[0], Wr[0]), np.linalg.norm(Wr[0] - Wp[0].T) / np.linalg.norm(Wp[0]))


def test_w_retro_learns_without_collapsing_onto_the_transpose():
    """From an independent start W_retro moves, and its distance to W_pred^T changes but stays far from 0;
    started at W_pred^T (the old initialisation) the two gates agree and it stays there."""
    rng = np.random.default_rng(8)
    net = ClappStack.init([6, 8, 5], "clapp", rng, dtype="float64", pred_init_scale=1.0)
    same = ClappStack([6, 8, 5], "clapp", {k: v.copy() for k, v in net.params.items()})
    for l in (1, 2):
        same.params[f"{l}/W_retro"] = same.params[f"{l}/W_pred"].T.copy()
    x = np.abs(rng.standard_normal((8, 6, 6)))
    d0, retro0 = _distances(net), net.params["1/W_retro"].copy()
    assert (d0 > 0.5).all() and not _distances(same).any()
    opt, opt_same = Adam(1e-2), Adam(1e-2)
    for _ in range(40):
        shifts, w = net.pair_sets(8, 6, rng, negatives=1, saccade_prob=0.5)
        net.train_batch(x, opt, shifts, w)
        same.train_batch(x, opt_same, shifts, w)
    d1 = _distances(net)
    assert np.isfinite(d1).all() and (d1 > 0.5).all() and (np.abs(d1 - d0) > 1e-3).all(), (d0, d1)
    assert rel_err(net.params["1/W_retro"], retro0) > 1e-2
    assert (_distances(same) < 1e-12).all()
    assert rel_err(same.params["1/W_retro"], net.params["1/W_pred"].T) > 1e-3   # ... and it did learn


def test_runs_record_retro_distance():
    """CLAPP runs record retro_distance per layer and epoch (and before learning); CLAPP-s runs do not."""
    import neuroplastic
    tiny = dict(data__max_samples=120, train__epochs=2, model__layers=[8, 8], train__batch_size=16)
    clapp = neuroplastic.run(neuroplastic.load_protocol("clapp_digits", **tiny, rule__name="clapp"))
    hist = clapp.history("retro_distance")
    assert sorted(hist) == [1, 2] and all(len(v) == 2 and np.isfinite(v).all() and (v > 0).all()
                                          for v in hist.values())
    initial = clapp.summary["retro_distance_initial"]
    assert sorted(initial) == ["1", "2"] and all(initial[str(l)] != hist[l][0] for l in (1, 2))
    clapp_s = neuroplastic.run(neuroplastic.load_protocol("clapp_digits", **tiny))
    assert clapp_s.history("retro_distance") == {} and "retro_distance_initial" not in clapp_s.summary
