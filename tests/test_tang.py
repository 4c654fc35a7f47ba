"""Correctness of the two-view hinge rules of Tang, Yang & Amit 2022 (science page of the docs, Tang et al.).

* the hinge loss's explicit gradient is the gradient of its loss (finite differences, float64) and equals
  torch autograd of the loss written as a distance matrix, with view 1 detached; a hand-worked example;
* end-to-end BP equals autograd of the network; a layer-wise (GLL/RLL) update equals autograd of the
  layer's head loss with the layer's input detached;
* FA and RF use the fixed random matrices (autograd of a network whose backward uses them) and are not BP;
  URF's feedback matrix gets the head's update;
* DTP's targets follow the difference-correction formula, its layer updates are the gradients of the
  layer losses with the targets held constant, its inverse gradient matches finite differences;
* augmentations: shapes, ranges, determinism, what each one does to a one-pixel image;
* every method runs through the command line and resumes bit-identically from a checkpoint.
"""
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.data.augment import augment, blur, jitter, random_crop, random_flip, two_views
from neuroplastic.protocol import ProtocolError, load
from neuroplastic.engines.numpy.engine import ENGINE as engine
from neuroplastic.engines.numpy.optim import Adam
from neuroplastic.rules import RULES
from neuroplastic.rules.hinge import hinge_views
from neuroplastic.rules.hinge_dense import ViewEncoder
from neuroplastic.rules.hinge_layers import forward
from neuroplastic.rules.hinge_methods import (HingeSettings, dtp_grads, dtp_targets, e2e_grads, inverse_grads,
                                             layer_grads)
from neuroplastic.engines.numpy.optim import GroupedOptimizer
from helpers import assert_cli_resume_is_bit_identical, fd_grad, rel_err

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted(n[len("hinge_"):] for n, r in RULES.items() if r.family == "views")
KINK = 1e-3


def pairs(N, k):
    """(anchor, partner) index arrays of the k cyclic off-diagonals."""
    a = np.repeat(np.arange(N), k)
    return a, (a + np.tile(np.arange(1, k + 1), N)) % N


def mid(v):
    """Halfway between the two middle values: a threshold with values on both sides."""
    v = np.sort(v)
    return (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def sample_embeddings(seed, N=7, m=5, k=None):
    """Views whose distances keep KINK away from both thresholds, with active and inactive terms of both kinds."""
    rng = np.random.default_rng(seed)
    kk = N - 1 if k is None else k
    for _ in range(1000):
        e1, e2 = rng.standard_normal((2, N, m))
        diff = e1[:, None, :] - e2[None, :, :]
        D = np.abs(diff).sum(-1)
        pos = np.diag(D)
        a, b = pairs(N, kk)
        neg = D[a, b]
        lo, hi = (mid(pos), mid(neg))                       # thresholds inside both distributions
        tau, delta = (lo + hi) / 2, (hi - lo) / 2
        if (delta > 0 and np.abs(diff).min() > KINK and np.abs(pos - lo).min() > KINK
                and np.abs(neg - hi).min() > KINK):
            return e1, e2, tau, delta
    raise RuntimeError("no sample far from the kinks")


# ---------------------------------------------------------------------------------------------
# 1. the hinge loss

def hinge_reference(e1, e2, tau, delta, k, w=None):
    """The loss written directly from the paper's definition, for finite differences (``w``: 1/k)."""
    N = len(e1)
    D = np.abs(e1[:, None, :] - e2[None, :, :]).sum(-1)
    a, b = pairs(N, k)
    return (np.maximum(np.diag(D) - (tau - delta), 0).sum()
            + np.maximum(tau + delta - D[a, b], 0).sum() * (1 / k if w is None else w)) / N


@pytest.mark.parametrize("k, w", [(None, 0.0), (1, 0.0), (3, 0.0), (4, 0.2)])
def test_hinge_gradient_matches_finite_differences(k, w):
    """w = 0: each negative weighs 1/k; (4, 0.2): the authors' future = 5 (4 negatives, each weighing 1/5)."""
    e1, e2, tau, delta = sample_embeddings(0, k=k)
    res = hinge_views(e1, e2, tau, delta, k, w)
    kk = len(e1) - 1 if k is None else k
    assert np.isclose(res.loss, hinge_reference(e1, e2, tau, delta, kk, w or None), rtol=1e-12)
    assert 0 < res.active < 1
    fd = fd_grad(lambda P: hinge_views(e1, P, tau, delta, k, w).loss, e2.copy())
    assert rel_err(res.grad, fd) < 1e-6
    if w:                                   # not the default weight: another loss and another gradient
        default = hinge_views(e1, e2, tau, delta, k)
        assert not np.isclose(default.loss, res.loss) and not np.allclose(default.grad, res.grad)


def test_negative_weight_is_the_authors_fewer_negatives_loss():
    """The authors' HingeNNFewerNegs (future = 5), written from their code in numpy on the distance matrix's
    diagonals: sum of the positives plus 1/5 of the sum over the first 4 off-diagonals, here cyclic and
    divided by N (their diagonals stop at the batch's edge; their loss is a sum over the batch)."""
    e1, e2, tau, delta = sample_embeddings(3, N=12, k=4)
    N = len(e1)
    out = -np.abs(e1[:, None, :] - e2[None, :, :]).sum(-1)             # OUT[a, b] = -D(e1_a, e2_b)
    out = (out + tau) * (2 * np.eye(N) - 1)
    theirs = np.sum(np.maximum(delta - np.diag(out), 0))
    for i in range(1, 5):
        rolled = np.roll(out, -i, axis=1)                                 # diagonal i, wrapped around
        theirs += np.sum(np.maximum(delta - np.diag(rolled), 0)) / 5
    assert hinge_views(e1, e2, tau, delta, 4, 0.2).loss == pytest.approx(theirs / N, rel=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("k, w", [(None, 0.0), (2, 0.0), (4, 0.2)])
def test_hinge_matches_torch_autograd_with_view_1_detached(k, w):
    torch = pytest.importorskip("torch")
    e1, e2, tau, delta = sample_embeddings(1, N=9, m=4, k=k)
    res = hinge_views(e1, e2, tau, delta, k, w)
    N = len(e1)
    kk = N - 1 if k is None else k
    t1 = torch.tensor(e1, requires_grad=True)
    t2 = torch.tensor(e2, requires_grad=True)
    D = (t1.detach()[:, None, :] - t2[None, :, :]).abs().sum(-1)      # D[a, b] = |e1_a - e2_b|_1
    mask = torch.zeros(N, N, dtype=torch.bool)
    a, b = pairs(N, kk)
    mask[a, b] = True
    loss = (torch.relu(torch.diagonal(D) - (tau - delta)).sum()
            + torch.relu(tau + delta - D[mask]).sum() * (w or 1 / kk)) / N
    loss.backward()
    assert np.isclose(res.loss, loss.item(), rtol=1e-12)
    assert np.allclose(res.grad, t2.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert t1.grad is None                                              # nothing flows into view 1


def test_hinge_worked_example():
    # D = [[0.5, 2.5], [4.5, 2.5]]; positives: 0.5 < 1 inactive, 2.5 - 1 = 1.5; negatives (k = 1, cyclic):
    # D[0, 1] = 2.5 < 3 -> 0.5, D[1, 0] = 4.5 inactive.  L = (1.5 + 0.5) / 2 = 1.
    # dL/de2_1 = (1/2) sign(2.5 - 5) - (1/2) sign(2.5 - 0) = -1: e2_1 moves towards e1_1 = 5, away from e1_0 = 0.
    res = hinge_views(np.array([[0.0], [5.0]]), np.array([[0.5], [2.5]]), tau=2.0, delta=1.0, negatives=1)
    assert res.loss == pytest.approx(1.0)
    assert np.array_equal(res.grad, [[0.0], [-1.0]])
    assert res.active == 0.5


# ---------------------------------------------------------------------------------------------
# 2. end-to-end, layer-wise and DTP updates against autograd and their formulas

SIZES = [10, 9, 7]
HINGE = HingeSettings(2.0, 1.0, 3)


def torch_act(torch, name):
    return {"relu": torch.relu, "hardtanh": torch.nn.functional.hardtanh, "tanh": torch.tanh}[name]


def net_and_views(process, feedback, activation="tanh", seed=0, N=8):
    rng = np.random.default_rng(seed)
    net = ViewEncoder.init(SIZES, activation, process, feedback, 6, rng, dtype="float64")
    x1, x2 = rng.random((2, N, SIZES[0]))
    return net.params, x1, x2


def torch_hinge(torch, e1, e2, h: HingeSettings):
    N = len(e2)
    D = (e1.detach()[:, None, :] - e2[None, :, :]).abs().sum(-1)
    a, b = pairs(N, h.negatives)
    return (torch.relu(torch.diagonal(D) - (h.tau - h.delta)).sum()
            + torch.relu(h.tau + h.delta - D[a, b]).sum() / h.negatives) / N


def aligned(torch, x, W, B):
    """x W^T forward; backward to x through B (feedback alignment), to W as usual."""
    return x.detach() @ W.T + x @ B.T - (x @ B.T).detach()


@pytest.mark.torch
@pytest.mark.parametrize("activation", ["relu", "hardtanh", "tanh"])
def test_e2e_bp_equals_autograd(activation):
    torch = pytest.importorskip("torch")
    params, x1, x2 = net_and_views("e2e", "bp", activation)
    res, grads = e2e_grads(params, activation, x1, x2, HINGE)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    phi = torch_act(torch, activation)

    def enc(x):
        h = torch.tensor(x)
        for l in range(len(SIZES) - 1):
            h = phi(h @ P[f"{l + 1}/W"].T)
        return h @ P["2/H"].T

    loss = torch_hinge(torch, enc(x1), enc(x2), HINGE)
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    assert sorted(grads) == ["1/W", "2/H", "2/W"]
    for k, g in grads.items():
        assert np.abs(P[k].grad.numpy()).max() > 0
        assert np.allclose(g, P[k].grad.numpy(), rtol=1e-10, atol=1e-14), k


@pytest.mark.torch
def test_e2e_fa_uses_the_fixed_feedback_matrices_and_is_not_bp():
    torch = pytest.importorskip("torch")
    params, x1, x2 = net_and_views("e2e", "fa")
    assert {"2/B", "2/B_H"} <= set(params) and "1/B" not in params
    res, grads = e2e_grads(params, "tanh", x1, x2, HINGE, feedback="fa")
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}

    def enc(x, fa):
        h = torch.tensor(x)
        h = torch.tanh(h @ P["1/W"].T)
        h = torch.tanh(aligned(torch, h, P["2/W"], P["2/B"]) if fa else h @ P["2/W"].T)
        return aligned(torch, h, P["2/H"], P["2/B_H"]) if fa else h @ P["2/H"].T

    torch_hinge(torch, enc(x1, True), enc(x2, True), HINGE).backward()
    for k, g in grads.items():
        assert np.allclose(g, P[k].grad.numpy(), rtol=1e-10, atol=1e-14), k
    bp = e2e_grads(params, "tanh", x1, x2, HINGE, feedback="bp")[1]
    assert np.allclose(grads["2/H"], bp["2/H"]), "the top weights get their true gradient"
    assert rel_err(grads["1/W"], bp["1/W"]) > 0.1 and rel_err(grads["2/W"], bp["2/W"]) > 0.1


@pytest.mark.torch
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_layerwise_bp_equals_autograd_of_the_head_loss_with_the_input_detached(layer, activation):
    torch = pytest.importorskip("torch")
    params, x1, x2 = net_and_views("gll", "bp", activation)
    h1 = forward(params, x1, activation, layer)[1][layer]
    h2 = forward(params, x2, activation, layer)[1][layer]
    res, grads = layer_grads(params, activation, layer, h1, h2, HINGE, "bp")
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    phi = torch_act(torch, activation)

    def enc(x):                                       # every layer in torch; the input of `layer` detached
        h = torch.tensor(x)
        for l in range(layer + 1):
            h = phi((h.detach() if l == layer else h) @ P[f"{l + 1}/W"].T)
        return h @ P[f"{layer + 1}/H"].T

    torch_hinge(torch, enc(x1), enc(x2), HINGE).backward()
    assert sorted(grads) == [f"{layer + 1}/H", f"{layer + 1}/W"]
    for k, g in grads.items():
        assert np.allclose(g, P[k].grad.numpy(), rtol=1e-10, atol=1e-14), k
    for k in set(P) - set(grads):
        assert P[k].grad is None or not P[k].grad.any(), f"{k} must not learn"


def test_rf_uses_the_fixed_random_matrix_and_is_not_bp():
    params, x1, x2 = net_and_views("gll", "rf")
    res, grads = layer_grads(params, "tanh", 0, x1, x2, HINGE, "rf")
    G = res.grad
    a2 = x2 @ params["1/W"].T
    expected = ((G @ params["1/B_H"]) * (1 - np.tanh(a2) ** 2)).T @ x2       # dW = ((G B) * phi'(a))^T x
    assert np.allclose(grads["1/W"], expected, rtol=1e-12)
    assert np.allclose(grads["1/H"], G.T @ np.tanh(a2), rtol=1e-12)
    assert "1/B_H" not in grads, "RF's feedback matrix stays fixed"
    bp = layer_grads(params, "tanh", 0, x1, x2, HINGE, "bp")[1]
    assert np.allclose(grads["1/H"], bp["1/H"])
    assert rel_err(grads["1/W"], bp["1/W"]) > 0.1


def test_urf_feedback_gets_the_heads_update_and_keeps_its_offset():
    params, x1, x2 = net_and_views("gll", "urf")
    res, grads = layer_grads(params, "tanh", 0, x1, x2, HINGE, "urf")
    h2 = np.tanh(x2 @ params["1/W"].T)
    assert np.allclose(grads["1/B_H"], res.grad.T @ h2, rtol=1e-12)        # dB = G^T h = dH
    assert np.array_equal(grads["1/B_H"], grads["1/H"])
    rf = layer_grads(params, "tanh", 0, x1, x2, HINGE, "rf")[1]
    assert np.allclose(grads["1/W"], rf["1/W"]), "the error reaches W through B, as in RF"
    offset = params["1/B_H"] - params["1/H"]
    H0 = params["1/H"].copy()
    opt = GroupedOptimizer(lambda g: Adam(1e-2))
    for _ in range(3):                     # Adam sees the same gradients for B and H: the same steps
        res, grads = layer_grads(params, "tanh", 0, x1, x2, HINGE, "urf")
        opt.step("layer1", params, grads)
    assert not np.allclose(params["1/H"], H0)
    assert np.allclose(params["1/B_H"] - params["1/H"], offset, rtol=0, atol=1e-12)


def dtp_case(activation="tanh", seed=0):
    params, x1, x2 = net_and_views("dtp", "", activation, seed)
    rng = np.random.default_rng(seed + 10)
    noise = {1: 0.1 * rng.standard_normal((2 * len(x1), SIZES[1]))}
    return params, x1, x2, noise


def test_dtp_targets_follow_the_difference_correction():
    params, x1, x2, noise = dtp_case()
    h = forward(params, x2, "tanh")[1]
    top = h[2] + np.random.default_rng(3).standard_normal(h[2].shape) * 0.1
    t1, t2 = dtp_targets(params, "tanh", h, top)
    g = lambda v: np.tanh(v @ params["2/V"].T + params["2/c"])                # noqa: E731
    assert np.array_equal(t2, top)
    assert np.allclose(t1, h[1] - g(h[2]) + g(top), rtol=1e-12)
    same = dtp_targets(params, "tanh", h, h[2].copy())                         # no error, no change,
    assert np.allclose(same[0], h[1], atol=1e-15)                              # however imperfect g is

    alpha = 0.3
    res, grads = dtp_grads(params, "tanh", x1, x2, HINGE, alpha, noise)
    N = len(x2)
    top = h[2] - alpha * N * res.hinge.grad @ params["2/H"]
    t1, t2 = dtp_targets(params, "tanh", h, top)
    a = forward(params, x2, "tanh")[0]
    for l, t in ((0, t1), (1, t2)):                                            # dL_l/dW_l, targets constant
        expected = ((2 / N) * (h[l + 1] - t) * (1 - np.tanh(a[l]) ** 2)).T @ h[l]
        assert np.allclose(grads[f"{l + 1}/W"], expected, rtol=1e-10)
        assert res.layer_losses[l] == pytest.approx(np.sum((h[l + 1] - t) ** 2) / N)
    bp = e2e_grads(params, "tanh", x1, x2, HINGE)[1]
    assert np.allclose(grads["2/H"], bp["2/H"]), "the head learns from the hinge loss directly"
    # the top layer's target step is alpha * N times its BP gradient, so its update is 2 alpha N / N times BP's
    assert np.allclose(grads["2/W"], 2 * alpha * bp["2/W"], rtol=1e-10)


def test_dtp_inverse_gradient_matches_finite_differences():
    params, x1, x2, noise = dtp_case()
    h_in = forward(params, np.concatenate([x2, x1]), "tanh", 1)[1][1]
    loss, grads = inverse_grads(params, "tanh", 1, h_in, noise[1])

    def f(V=None, c=None):
        p = dict(params, **({"2/V": V} if V is not None else {}), **({"2/c": c} if c is not None else {}))
        return inverse_grads(p, "tanh", 1, h_in, noise[1])[0]

    noisy = h_in + noise[1]
    rec = np.tanh(np.tanh(noisy @ params["2/W"].T) @ params["2/V"].T + params["2/c"])
    assert loss == pytest.approx(np.sum((rec - noisy) ** 2) / len(h_in), rel=1e-12)
    assert rel_err(grads["2/V"], fd_grad(lambda V: f(V=V), params["2/V"].copy())) < 1e-6
    assert rel_err(grads["2/c"], fd_grad(lambda c: f(c=c), params["2/c"].copy())) < 1e-6
    res, all_grads = dtp_grads(params, "tanh", x1, x2, HINGE, 0.05, noise)
    assert np.allclose(all_grads["2/V"], grads["2/V"]) and res.inverse_losses == [pytest.approx(loss)]


def test_the_encoder_is_the_same_for_every_method():
    """One seed, one random encoder: the random-weight baselines of all methods are the same network."""
    Ws = []
    for name in METHODS:
        rule = RULES["hinge_" + name]
        p = ViewEncoder.init(SIZES, "relu", rule.process, rule.feedback, 6, np.random.default_rng(5)).params
        Ws.append([p[f"{l + 1}/W"] for l in range(len(SIZES) - 1)])
    assert all(np.array_equal(a, b) for W in Ws[1:] for a, b in zip(W, Ws[0]))


def test_torch_init_of_the_dense_encoder_keeps_he_init_unchanged():
    """init = 'torch' draws every weight, head, feedback and inverse (and its bias) U(+-1/sqrt(fan_in)); the
    default 'he' draws what it drew before (the inverse biases start at zero without a draw)."""
    sizes = [400, 300, 200]
    p = ViewEncoder.init(sizes, "tanh", "dtp", "", 6, np.random.default_rng(0), init="torch").params
    for key, fan_in in (("1/W", 400), ("2/W", 300), ("2/H", 200), ("2/V", 200), ("2/c", 200)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(p[key]).max() <= bound and np.abs(p[key]).max() > 0.9 * bound, key
    assert np.std(p["2/V"]) == pytest.approx(1 / np.sqrt(3 * 200), rel=0.05)
    he = ViewEncoder.init(sizes, "tanh", "dtp", "", 6, np.random.default_rng(0)).params
    rng = np.random.default_rng(0)
    W1 = (rng.standard_normal((300, 400)) * np.sqrt(2 / 400)).astype(np.float32)
    assert np.array_equal(he["1/W"], W1) and not np.any(he["2/c"])
    fa = ViewEncoder.init(sizes, "relu", "e2e", "fa", 6, np.random.default_rng(0), init="torch").params
    assert np.abs(fa["2/B"]).max() <= 1 / np.sqrt(300) and np.abs(fa["2/B_H"]).max() <= 1 / np.sqrt(200)


# ---------------------------------------------------------------------------------------------
# 3. augmentations

def dot_images(n=6, side=8):
    x = np.zeros((n, side, side), dtype=np.float32)
    x[:, 3, 4] = 1.0
    return x


def test_augmentations_keep_shape_dtype_and_range_and_are_deterministic():
    from sklearn.datasets import load_digits

    x = (load_digits().images[:50] / 16).astype(np.float32)
    settings = dict(crop_pad=2, flip=True, jitter_strength=0.5, blur_sigma=1.0)
    a1, a2 = two_views(x, np.random.default_rng(7), **settings)
    b1, b2 = two_views(x, np.random.default_rng(7), **settings)
    for v in (a1, a2):
        assert v.shape == x.shape and v.dtype == x.dtype
        assert v.min() >= 0 and v.max() <= 1
    assert np.array_equal(a1, b1) and np.array_equal(a2, b2)                   # same seed, same views
    assert not np.allclose(a1, a2)                                             # two different views
    assert not np.allclose(two_views(x, np.random.default_rng(8), **settings)[0], a1)
    assert np.array_equal(augment(x, np.random.default_rng(0), crop_pad=0, jitter_strength=0.0), x)


def test_each_augmentation_does_what_it_says():
    x = dot_images()
    rng = np.random.default_rng(0)
    c = random_crop(x, rng, 2)
    assert np.array_equal(c.sum(axis=(1, 2)), np.ones(len(x)))                 # the dot moved, nothing lost
    for im in c:
        (r,), (col,) = np.nonzero(im)
        assert abs(r - 3) <= 2 and abs(col - 4) <= 2
    assert len(set(zip(*np.nonzero(c)[1:]))) > 1, "different images, different shifts"
    f = random_flip(x, np.random.default_rng(1), p=1.0)
    assert np.array_equal(f, x[:, :, ::-1])
    j = jitter(np.full((4, 3, 3), 0.5, dtype=np.float32), np.random.default_rng(2), 0.5)
    assert np.allclose(j, j[:, :1, :1]) and not np.allclose(j, 0.5)            # a flat image stays flat
    b = blur(x, np.random.default_rng(3), 2.0)
    assert (b[:, 3, 4] == b.max(axis=(1, 2))).all() and (b <= 1).all()       # spread around the dot
    assert (b.max(axis=(1, 2)) < 0.5).sum() >= 2 and (b > 0).sum() > len(x)


# ---------------------------------------------------------------------------------------------
# 4. the engine: protocol checks, every method through the command line, bit-identical resume

def test_rule_family_and_stimulus_kind_must_agree():
    p = load(ROOT / "protocols" / "tang_e2e_bp_quick.toml", ['stimulus.kind="glimpses"'])
    with pytest.raises(ProtocolError, match=r"\[stimulus\] kind = 'glimpses'.*'views'"):
        engine.check(p)
    p = load(ROOT / "protocols" / "clapp_digits.toml", ['stimulus.kind="views"'])
    with pytest.raises(ProtocolError, match="hinge rules"):
        engine.check(p)


@pytest.mark.parametrize("sets, message", [
    (["rule.negative_weight=-0.5"], r"tang_e2e_bp_quick.toml: \[rule\] negative_weight = -0.5: must be a number >= 0"),
    (['model.init="xavier"'], r"\[model\] init = \"xavier\": must be one of 'he', 'torch'"),
    (['model.init="torch"', "model.init_scale=2.0"], r"\[model\] init_scale = 2.0: init = 'torch' draws .*allowed: 1.0"),
])
def test_bad_negative_weight_and_init_are_named_with_their_file_and_allowed_values(sets, message):
    with pytest.raises(ProtocolError, match=message):
        engine.check(load(ROOT / "protocols" / "tang_e2e_bp_quick.toml", sets))
    with pytest.raises(ProtocolError, match=r"\[rule\] negative_weight = 0.2: not read by rule 'clapp_s'"):
        load(ROOT / "protocols" / "clapp_digits.toml", ["rule.negative_weight=0.2"])


TINY = ["data.max_samples=200", "train.epochs=3", "model.layers=[12,10]", "train.batch_size=32", "rule.head=8"]


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_through_the_cli_and_resumes_bit_identically(method, tmp_path):
    path = ROOT / "protocols" / f"tang_{method}_quick.toml"
    directory, summary = assert_cli_resume_is_bit_identical(path, TINY, tmp_path, epochs=3)
    assert set(summary["probe"]) == set(summary["probe_random"]) == {"1", "2"}
    assert ",train,2,loss," in (directory / "metrics.csv").read_text()
