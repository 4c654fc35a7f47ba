"""Conv CLAPP(-s) layers with a bias and PyTorch's default init (``[model] bias``, ``[model] init``).

* the explicit bias gradient (and the kernel's, with a bias) equals central finite differences of
  an independent pair-by-pair loss (float64), for CLAPP-s and CLAPP (each pathway's other side held
  fixed), both scores, both samplings, with and without a max-pool; and torch autograd of that loss;
* ``init = "torch"`` draws every kernel and bias from U(-1/sqrt(9 C_in), 1/sqrt(9 C_in)) and ``W_pred``,
  ``W_retro`` from U(-1/sqrt(C), 1/sqrt(C)): bounds, uniformity (Kolmogorov-Smirnov) and variance;
* the stack's features and training step use the bias; dense CLAPP and the Brian2 engine refuse the
  keys; protocols that leave them at their defaults keep their digest.
"""
import numpy as np
import pytest
from array_api_compat import array_namespace
from scipy import stats

from neuroplastic.engines.numpy import make_optimizer
from neuroplastic.engines.numpy.conv_stack import ConvClappStack
from neuroplastic.engines.prepare import prepare
from neuroplastic.protocol import PROTOCOLS_DIR, ProtocolError, load, loads
from neuroplastic.rules.conv import conv2d
from neuroplastic.rules.conv_clapp import conv_clapp_layer, conv_forward

from helpers import fd_grad, rel_err

KINK = 1e-4     # distance every ReLU input, hinge margin and max-pool runner-up keeps from its kink
OFFSETS = (1, 2)
B, G, P, C_IN, C = 3, 3, 4, 2, 3


# ---------------------------------------------------------------------------------------------
# an independent loss: every scored pair listed explicitly

def pair_list(sampling, pairs, weights):
    """``(ctx, cur, kappa, y, w)``: flat patch index of context and partner, offset, label, weight per pair."""
    out = []
    for kappa, k in enumerate(OFFSETS):
        for b in range(B):
            for r in range(G - k):
                for c in range(G):
                    ctx = (b * G + r) * G + c
                    if sampling == "rolled":
                        for s, shift in enumerate(pairs):
                            cur = (((b - shift) % B) * G + r + k) * G + c
                            out.append((ctx, cur, kappa, 1.0 if shift == 0 else -1.0, weights[kappa, s, b, r, c]))
                    else:
                        out.append((ctx, (b * G + r + k) * G + c, kappa, 1.0, weights[kappa, 0, b, r, c]))
                        for j in range(pairs.shape[1]):
                            out.append((ctx, pairs[kappa, j, b, r, c], kappa, -1.0, weights[kappa, 1 + j, b, r, c]))
    ctx, cur, kappa, y, w = (np.array(v) for v in zip(*out))
    return ctx, cur, kappa, y, w


def margins(q, q_held, W_pred, W_retro, pl):
    """Hinge margins ``1 - y u`` per pair and location: the prediction's, and CLAPP's retrodiction's.

    CLAPP-s scores z . (W_pred c) with both sides live; CLAPP's prediction holds the context at
    ``q_held``, its retrodiction c . (W_retro z) the current patch.
    """
    xp = array_namespace(q)
    ctx, cur, kappa, y, _ = (xp.asarray(v) for v in pl)
    q_ctx = q if W_retro is None else q_held
    d = xp.sum(q_ctx[ctx][:, :, None, :] * W_pred[kappa][:, None, :, :], axis=-1)       # W_pred c
    out = [1 - y[:, None] * xp.sum(q[cur] * d, axis=-1)]
    if W_retro is not None:
        r = xp.sum(q_held[cur][:, :, None, :] * W_retro[kappa][:, None, :, :], axis=-1)  # W_retro z
        out.append(1 - y[:, None] * xp.sum(q[ctx] * r, axis=-1))
    return out


def pair_loss(q, q_held, W_pred, W_retro, pl):
    """The layer's loss: sum over pairs of weight / n_l times the hinge of each location (and pathway)."""
    xp = array_namespace(q)
    w = xp.asarray(pl[4])[:, None] / q.shape[1]
    return sum(xp.sum(w * m * (m > 0)) for m in margins(q, q_held, W_pred, W_retro, pl))


def maps_np(W, b, x, pool, score):
    """Scored maps (B G_r G_c, n_l, C) of ``maxpool(relu(W * x + b))``."""
    z = conv_forward(W, x.reshape(-1, *x.shape[3:]), b=b, pool=pool)
    return z.mean(axis=(1, 2))[:, None, :] if score == "patch" else z.reshape(z.shape[0], -1, z.shape[-1])


def sample(seed, rule, sampling, pool, score):
    """A layer, its pairs and its pair list, with every kink further than KINK from the sample."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        net = ConvClappStack.init([C, "M"] if pool else [C], C_IN, rule, rng, offsets=OFFSETS, dtype="float64",
                                  init="torch", bias=True, score=score, sampling=sampling)
        p = net.params
        W, b = p["1/W"], p["1/b"] + 0.2
        W_pred = 4 * p["1/W_pred"]
        W_retro = 4 * p["1/W_retro"] if rule == "clapp" else None
        x = rng.standard_normal((B, G, G, P, P, C_IN))
        pairs, weights = net.pair_sets(B, G, G, rng, 2 if rule == "clapp_s" else 1, 0.5)
        if sampling == "authors":                # layer 1's prediction pairs (CLAPP's mirror scores them too)
            pairs, weights = (pairs[0, 0], weights[0, 0]) if rule == "clapp" else (pairs[0], weights[0])
        pl = pair_list(sampling, pairs, weights)
        pre = conv2d(x.reshape(-1, P, P, C_IN), W) + b                           # the drive a
        if np.abs(pre).min() < KINK:
            continue
        if pool:
            win = pre.reshape(-1, P // 2, 2, P // 2, 2, C).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4)
            top = np.sort(win, axis=1)
            if ((top[:, -1] > 0) & (top[:, -1] - top[:, -2] < KINK)).any():
                continue
        q = maps_np(W, b, x, pool, score)
        m = np.concatenate([mm[pl[4] > 0] for mm in margins(q, q, W_pred, W_retro, pl)])
        if np.abs(m).min() > KINK and (m > 0).any() and (m < 0).any():
            return W, b, W_pred, W_retro, x, pairs, weights, pl
    raise RuntimeError("no sample far from the kinks")


def layer(W, b, W_pred, W_retro, x, pairs, weights, sampling, pool, score):
    kw = dict(shifts=pairs, neg_index=None) if sampling == "rolled" else dict(shifts=None, neg_index=pairs)
    return conv_clapp_layer(W, W_pred, x, OFFSETS, weights=weights, W_retro=W_retro, b=b, pool=pool, score=score, **kw)


CONFIGS = [(rule, sampling, score, pool) for rule in ("clapp_s", "clapp") for sampling in ("rolled", "authors")
           for score in ("location", "patch") for pool in (False, True)]


@pytest.mark.parametrize("rule, sampling, score, pool", CONFIGS)
def test_bias_gradient_matches_finite_differences(rule, sampling, score, pool):
    W, b, W_pred, W_retro, x, pairs, weights, pl = sample(1, rule, sampling, pool, score)
    g = layer(W, b, W_pred, W_retro, x, pairs, weights, sampling, pool, score)
    q_held = maps_np(W, b, x, pool, score)                   # CLAPP: each pathway's other side, held fixed

    def loss(P_W=W, P_b=b):
        return float(pair_loss(maps_np(P_W, P_b, x, pool, score), q_held, W_pred, W_retro, pl))

    assert np.isclose(float(g.loss), loss(), rtol=1e-12)
    assert g.b.shape == (C,) and np.abs(g.b).max() > 0
    assert rel_err(g.b, fd_grad(lambda Pb: loss(P_b=Pb), b.copy())) < 1e-6
    assert rel_err(g.W, fd_grad(lambda PW: loss(P_W=PW), W.copy())) < 1e-6
    # without a bias the layer returns none, and its loss is that of b = 0
    g0 = layer(W, None, W_pred, W_retro, x, pairs, weights, sampling, pool, score)
    assert g0.b is None
    assert np.isclose(float(g0.loss), float(pair_loss(*(maps_np(W, 0 * b, x, pool, score),) * 2, W_pred, W_retro, pl)),
                      rtol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("rule, sampling, score, pool", CONFIGS)
def test_bias_gradient_matches_torch_autograd(rule, sampling, score, pool):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    W, b, W_pred, W_retro, x, pairs, weights, pl = sample(2, rule, sampling, pool, score)
    g = layer(W, b, W_pred, W_retro, x, pairs, weights, sampling, pool, score)
    tW, tb = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    h = torch.tensor(x.reshape(-1, P, P, C_IN)).permute(0, 3, 1, 2)
    z = torch.relu(F.conv2d(h, tW.permute(0, 3, 1, 2), tb, padding=1))
    if pool:
        z = F.max_pool2d(z, 2)
    z = z.permute(0, 2, 3, 1)
    q = z.mean(dim=(1, 2))[:, None, :] if score == "patch" else z.reshape(z.shape[0], -1, C)
    loss = pair_loss(q, q.detach(), torch.tensor(W_pred), None if W_retro is None else torch.tensor(W_retro), pl)
    loss.backward()
    assert np.isclose(float(g.loss), float(loss.detach()), rtol=1e-12)
    np.testing.assert_allclose(g.b, tb.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(g.W, tW.grad.numpy(), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# init = "torch"

def _check_uniform(a, bound):
    """``a`` lies in [-bound, bound] and is U(-bound, bound): K-S test, mean and variance (to 4 sigma)."""
    v = a.ravel()
    n = v.size
    assert np.abs(v).max() <= bound and np.abs(v).max() > bound * (1 - 20 / n)
    assert stats.kstest(v, stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3
    var = bound ** 2 / 3
    assert abs(v.mean()) < 4 * np.sqrt(var / n)
    # the sample variance of n uniforms has relative standard deviation sqrt(4/5) / sqrt(n)
    assert abs(np.mean(v ** 2) / var - 1) < 4 * np.sqrt(0.8 / n)


def test_torch_init_draws_pytorch_default_ranges():
    arch = [256, "M", 256]
    net = ConvClappStack.init(arch, 1, "clapp", np.random.default_rng(0), offsets=(1, 2), dtype="float64",
                              init="torch", bias=True)
    p = net.params
    assert list(p) == ["1/W", "1/b", "1/W_pred", "1/W_retro", "2/W", "2/b", "2/W_pred", "2/W_retro"]
    for l, c_in in ((1, 1), (2, 256)):
        bound = 1 / np.sqrt(9 * c_in)
        assert p[f"{l}/W"].shape == (256, 3, 3, c_in) and p[f"{l}/b"].shape == (256,)
        _check_uniform(p[f"{l}/W"], bound)
        _check_uniform(p[f"{l}/b"], bound)
        for name in ("W_pred", "W_retro"):
            assert p[f"{l}/{name}"].shape == (2, 256, 256)
            _check_uniform(p[f"{l}/{name}"], 1 / np.sqrt(256))
    assert not np.array_equal(p["1/W_pred"], p["1/W_retro"])          # independent draws
    # without a bias the same draws, less the biases'
    plain = ConvClappStack.init([4, "M", 5], 1, "clapp_s", np.random.default_rng(1), init="torch").params
    assert list(plain) == ["1/W", "1/W_pred", "2/W", "2/W_pred"]
    with pytest.raises(ValueError, match="init_scale = 2.0 and pred_init_scale = 0.1 must keep their defaults"):
        ConvClappStack.init([4], 1, "clapp_s", np.random.default_rng(0), init="torch", init_scale=2.0)
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        ConvClappStack.init([4], 1, "clapp_s", np.random.default_rng(0), init="xavier")


def test_he_init_with_a_bias_draws_as_without_one_and_starts_it_at_zero():
    arch = [4, "M", 5]
    plain = ConvClappStack.init(arch, 1, "clapp", np.random.default_rng(3), offsets=(1, 2)).params
    biased = ConvClappStack.init(arch, 1, "clapp", np.random.default_rng(3), offsets=(1, 2), bias=True).params
    assert set(biased) == set(plain) | {"1/b", "2/b"}
    for k, v in plain.items():
        np.testing.assert_array_equal(biased[k], v)
    for l, c in ((1, 4), (2, 5)):
        assert biased[f"{l}/b"].shape == (c,) and biased[f"{l}/b"].dtype == np.float32 and not biased[f"{l}/b"].any()


def test_stack_features_and_step_use_the_bias():
    rng = np.random.default_rng(4)
    net = ConvClappStack.init([4, "M", 5], 1, "clapp_s", rng, offsets=(1,), dtype="float64", init="torch", bias=True)
    x = rng.standard_normal((3, 3, 2, 6, 6))
    feats = net.features(x)
    shifted = ConvClappStack(net.arch, 1, "clapp_s", {**net.params, "1/b": net.params["1/b"] + 0.5}, offsets=(1,))
    assert not np.allclose(shifted.features(x)[0], feats[0])
    h = conv_forward(net.params["1/W"], x[..., None], b=net.params["1/b"], pool=True)
    np.testing.assert_allclose(feats[0], h.mean(axis=(-3, -2)).reshape(3, -1, 4))
    b0 = {k: v.copy() for k, v in net.params.items()}
    shifts, weights = net.pair_sets(3, 3, 2, rng, 1, 0.5)
    net.train_batch(x, make_optimizer("sgd", 0.1), shifts, weights)
    assert not np.array_equal(net.params["1/b"], b0["1/b"]) and not np.array_equal(net.params["2/b"], b0["2/b"])


# ---------------------------------------------------------------------------------------------
# protocols

@pytest.mark.parametrize("text, key, allowed", [
    ('[model]\nbias = true', "model.bias", "allowed: False"),
    ('[model]\ninit = "torch"', "model.init", "allowed: 'he'"),
    ('[rule]\nname = "clapp"\n[model]\nbias = true', "model.bias", "allowed: False"),
])
def test_dense_clapp_refuses_conv_bias_and_init(text, key, allowed):
    with pytest.raises(ProtocolError, match="dense layers predict the next glimpse") as err:
        prepare(loads(f'name = "x"\n{text}'))
    assert err.value.key == key and allowed in str(err.value)


def test_torch_init_refuses_the_he_scales():
    for key, value in (("init_scale", 2.0), ("pred_init_scale", 1.0)):
        with pytest.raises(ProtocolError, match=f"init = 'torch' draws PyTorch's default ranges") as err:
            prepare(loads(f'name = "x"\n[model]\narch = "small"\ninit = "torch"\n{key} = {value}'))
        assert err.value.key == f"model.{key}"


@pytest.mark.parametrize("text", ['[model]\nbias = false', '[model]\ninit = "he"'])
def test_brian_engine_refuses_the_keys(text):
    with pytest.raises(ProtocolError, match="not read by rule 'clapp_s' on engine 'brian'"):
        loads(f'name = "x"\n[engine]\nname = "brian"\n{text}')


@pytest.mark.parametrize("base", ['[model]\narch = "small"', '[rule]\nname = "clapp"\n[model]\narch = "vgg6"',
                                  "[model]", '[rule]\nname = "clapp"\n[model]'])
def test_defaults_keep_the_digest(base):
    plain = loads(f'name = "x"\n{base}')
    explicit = loads(f'name = "x"\n{base}\ninit = "he"\nbias = false')        # [model] is the last table
    assert explicit.given["model"]["init"] == "he" and explicit.model.bias is False
    assert explicit.digest() == plain.digest()
    assert plain.with_overrides(['model.init="he"', "model.bias=false"]).digest() == plain.digest()
    assert plain.with_overrides(["model.bias=true"]).digest() != plain.digest()
    assert plain.with_overrides(['model.init="torch"']).digest() != plain.digest()


def test_the_paper_protocols_use_the_authors_init_and_biases():
    for name in ("clapp_s_stl10_paper", "clapp_stl10_paper"):
        model = load(PROTOCOLS_DIR / f"{name}.toml").model
        assert (model.init, model.bias) == ("torch", True)


@pytest.mark.torch
@pytest.mark.parametrize("rule, sampling", [("clapp_s", "rolled"), ("clapp", "authors")])
def test_stack_with_bias_on_torch_tensors_equals_numpy(rule, sampling):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    kw = dict(offsets=(1, 2), score="location", sampling=sampling)
    ref = ConvClappStack.init([3, "M", 4], 2, rule, rng, dtype="float64", init="torch", bias=True, **kw)
    net = ConvClappStack([3, "M", 4], 2, rule, {k: torch.tensor(v) for k, v in ref.params.items()}, **kw)
    x = 3 * np.abs(rng.standard_normal((4, 4, 3, 6, 6, 2)))
    opt_ref, opt = make_optimizer("adam", 0.01), make_optimizer("adam", 0.01)
    for _ in range(2):
        pairs, weights = ref.pair_sets(4, 4, 3, rng, 2, 0.5)
        ref.train_batch(x, opt_ref, pairs, weights)
        net.train_batch(torch.tensor(x), opt, pairs, weights)
    for k, v in ref.params.items():
        assert isinstance(net.params[k], torch.Tensor)
        np.testing.assert_allclose(net.params[k].numpy(), v, rtol=1e-10, atol=1e-13, err_msg=k)
    for f, f_ref in zip(net.features(torch.tensor(x)), ref.features(x)):
        np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-10, atol=1e-13)
