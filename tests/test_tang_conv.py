"""The hinge methods of Tang, Yang & Amit 2022 on convolutional encoders (science page of the docs, Tang et al.).

* ``conv2d_input_grad`` (col2im) equals torch autograd of ``conv2d`` and finite differences, and refuses
  what it cannot know (the input size under a stride > 1);
* ``ConvViewEncoder``: init conventions (one random encoder for every method, He-normal kernels, the
  feedback each method needs, heads N(0, 1 / fan-in); or PyTorch's defaults, as the paper protocols start),
  features = spatial means of the layers' outputs;
* end-to-end BP equals torch autograd of the network (and finite differences); a layer-wise update equals
  autograd of the layer's head loss with its input detached (and finite differences); FA equals autograd of
  a network whose backward uses the fixed kernels B and is not BP; RF reaches the layer through B_H; URF's
  B_H gets the head's update; all of it for heads on the spatial mean, the flattened map and its 2 x 2
  average pool ([rule] head_input), and for linear layers;
* Tang et al.'s encoders: the layer sequences of their CONV6 and VGG6, their heads' sizes, one step on RGB;
* the engine: conv encoders for every hinge method but DTP, head_input refused where it means nothing, and a
  bit-identical resume through the CLI.
"""
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.protocol import ProtocolError, load
from neuroplastic.engines.numpy.engine import ENGINE as engine
from neuroplastic.rules.conv import conv2d, conv2d_input_grad
from neuroplastic.rules import RULES, SETTINGS
from neuroplastic.rules.architectures import parse_architecture
from neuroplastic.rules.hinge import hinge_views
from neuroplastic.rules.hinge_methods import HingeSettings
from neuroplastic.rules.hinge_conv import HEAD_INPUTS, ConvViewEncoder
from helpers import assert_cli_resume_is_bit_identical, fd_grad, rel_err

ROOT = Path(__file__).resolve().parents[1]
ARCH = [3, "M", 4, "M"]                  # 8 x 8 images -> 3 maps of 4 x 4 -> 4 maps of 2 x 2
TOL = 1e-9                               # float64: the numpy and torch sums differ only by rounding
HEADS = ["mean", "flatten", "pool2"]     # what a head reads of its layer's maps ([rule] head_input)


# ---------------------------------------------------------------------------------------------
# 1. the input gradient of a convolution

@pytest.mark.torch
@pytest.mark.parametrize("stride, padding, size", [(1, 1, (7, 6)), (1, 0, (7, 6)), (1, 2, (5, 5)),
                                                   (2, 1, (7, 6)), (2, 0, (8, 7)), (3, 2, (9, 5))])
def test_conv2d_input_grad_equals_torch_autograd(stride, padding, size):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *size, 2))
    W = rng.standard_normal((4, 3, 3, 2))
    delta = rng.standard_normal(conv2d(x, W, stride, padding).shape)
    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
    a = torch.nn.functional.conv2d(xt, torch.tensor(W).permute(0, 3, 1, 2), stride=stride, padding=padding)
    a.backward(torch.tensor(delta).permute(0, 3, 1, 2))
    g = conv2d_input_grad(delta, W, stride, padding, size=size, block_bytes=2000)    # several blocks of maps
    assert g.shape == x.shape
    np.testing.assert_allclose(g, xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-12, atol=1e-12)
    if stride == 1:                                       # the size follows from the output's
        np.testing.assert_array_equal(conv2d_input_grad(delta, W, stride, padding), g)


def test_conv2d_input_grad_matches_finite_differences_and_keeps_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 6, 2))
    W = rng.standard_normal((3, 3, 3, 2))
    delta = rng.standard_normal((2, 5, 6, 3))
    fd = fd_grad(lambda P: float(np.sum(delta * conv2d(P, W))), x.copy())
    assert rel_err(conv2d_input_grad(delta, W), fd) < 1e-8
    assert conv2d_input_grad(delta.astype(np.float32), W.astype(np.float32)).dtype == np.float32


def test_conv2d_input_grad_refuses_what_it_cannot_know():
    delta, W = np.zeros((1, 3, 3, 2)), np.zeros((2, 3, 3, 1))
    with pytest.raises(ValueError, match="stride 2.*pass size"):
        conv2d_input_grad(delta, W, 2, 1)
    with pytest.raises(ValueError, match="input height of 9 gives an output height of 5, not 3"):
        conv2d_input_grad(delta, W, 2, 1, size=(9, 5))
    with pytest.raises(ValueError, match="3 channels and the kernel 2"):
        conv2d_input_grad(np.zeros((1, 3, 3, 3)), W)


# ---------------------------------------------------------------------------------------------
# 2. the encoder

def encoder(process, feedback, activation="tanh", arch=ARCH, seed=0, N=8, side=8, head_input="mean"):
    """A float64 encoder and two close views (positives nearer than negatives), hinge thresholds at the medians."""
    rng = np.random.default_rng(seed)
    net = ConvViewEncoder.init(arch, activation, process, feedback, 5, rng, dtype="float64", head_input=head_input,
                               size=(side, side))
    x1 = rng.random((N, side, side))
    x2 = x1 + 0.1 * rng.standard_normal(x1.shape)
    return net, x1, x2


def thresholds(net, l, x1, x2, negatives=3):
    """tau, delta with the hinge's margins at the median positive and negative distances at layer l's head."""
    H = net.params[f"{l + 1}/H"]
    e1, e2 = (net.head_inputs(x)[l] @ H.T for x in (x1, x2))
    D = np.abs(e1[:, None, :] - e2[None, :, :]).sum(-1)
    N = len(D)
    lo = np.median(np.diag(D))
    hi = np.median([D[a, (a + s) % N] for a in range(N) for s in range(1, negatives + 1)])
    assert hi > lo
    return HingeSettings((lo + hi) / 2, (hi - lo) / 2, negatives)


def test_init_conventions():
    params = {}
    for name, rule in RULES.items():
        if rule.family == "views" and rule.process != "dtp":
            params[name] = ConvViewEncoder.init(ARCH, "relu", rule.process, rule.feedback, 5,
                                                np.random.default_rng(3)).params
    ref = params["hinge_e2e_bp"]
    assert sorted(ref) == ["1/W", "2/H", "2/W"]
    assert ref["1/W"].shape == (3, 3, 3, 1) and ref["2/W"].shape == (4, 3, 3, 3) and ref["2/H"].shape == (5, 4)
    assert ref["1/W"].dtype == np.float32
    assert sorted(params["hinge_e2e_fa"]) == ["1/W", "2/B", "2/B_H", "2/H", "2/W"]
    assert sorted(params["hinge_gll_bp"]) == ["1/H", "1/W", "2/H", "2/W"]
    assert sorted(params["hinge_gll_urf"]) == ["1/B_H", "1/H", "1/W", "2/B_H", "2/H", "2/W"]
    assert params["hinge_e2e_fa"]["2/B"].shape == ref["2/W"].shape
    for p in params.values():                    # one seed, one random encoder for every method
        assert np.array_equal(p["1/W"], ref["1/W"]) and np.array_equal(p["2/W"], ref["2/W"])
    # He-normal kernels (fan-in 9 C_in), heads N(0, 1 / C)
    big = ConvViewEncoder.init([64, 48], "relu", "gll", "rf", 40, np.random.default_rng(0), in_channels=16,
                               init_scale=0.5).params
    assert np.var(big["1/W"]) == pytest.approx(0.25 * 2 / (9 * 16), rel=0.05)
    assert np.var(big["2/W"]) == pytest.approx(0.25 * 2 / (9 * 64), rel=0.05)
    assert np.var(big["2/H"]) == pytest.approx(1 / 48, rel=0.1)
    assert np.var(big["2/B_H"]) == pytest.approx(1 / 48, rel=0.1)
    with pytest.raises(ValueError, match="process 'dtp': the inverses' shapes depend on the maps'"):
        ConvViewEncoder.init(ARCH, "relu", "dtp", "", 5, np.random.default_rng(0))


def test_dtp_init_gives_each_layer_above_the_first_a_transposed_conv_inverse():
    dtp = ConvViewEncoder.init(ARCH, "tanh", "dtp", "", 5, np.random.default_rng(3), size=(8, 8)).params
    assert sorted(dtp) == ["1/W", "2/H", "2/V", "2/W", "2/c"]
    assert dtp["2/V"].shape == dtp["2/W"].shape == (4, 3, 3, 3) and dtp["2/c"].shape == (3,)
    assert np.array_equal(dtp["1/W"], ConvViewEncoder.init(ARCH, "tanh", "e2e", "bp", 5, np.random.default_rng(3),
                                                           size=(8, 8)).params["1/W"])     # the same encoder
    assert not dtp["2/c"].any()                                                # He: zero biases, as dense DTP
    torch_like = ConvViewEncoder.init([8, "M", 16, "M"], "tanh", "dtp", "", 5, np.random.default_rng(3),
                                      size=(8, 8), init="torch").params
    bound = 1 / np.sqrt(9 * 8)                   # ConvTranspose2d(16, 8)'s fan-in: its weight's dimension 1, x 9
    for key in ("2/V", "2/c"):
        assert bound * 0.9 < np.abs(torch_like[key]).max() <= bound, key
    with pytest.raises(ValueError, match="layer 2's inverse.*even side.*inputs of 6 x 6 give it maps of 3 x 3"):
        ConvViewEncoder.init(ARCH, "tanh", "dtp", "", 5, np.random.default_rng(3), size=(6, 6))


def test_features_are_the_spatial_means_of_the_layer_outputs():
    net, x, _ = encoder("gll", "bp", "relu", arch="small", N=5, side=16)
    assert net.n_layers == 2
    f = net.features(x, batch=2)                                           # in blocks of 2 images
    h1, h2 = net.layer_input(x, 1), net.layer_input(x, 2)
    assert h1.shape == (5, 8, 8, 32) and h2.shape == (5, 4, 4, 64)
    np.testing.assert_allclose(f[0], h1.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(f[1], h2.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_array_equal(net.layer_input(x, 0), x[..., None])      # grey images get a channel axis


# ---------------------------------------------------------------------------------------------
# 3. gradients against torch autograd and finite differences

def torch_act(torch, name):
    return {"relu": torch.relu, "hardtanh": torch.nn.functional.hardtanh, "tanh": torch.tanh}[name]


def torch_hinge(torch, e1, e2, h: HingeSettings):
    N, k = len(e2), h.negatives
    D = (e1.detach()[:, None, :] - e2[None, :, :]).abs().sum(-1)
    a = np.repeat(np.arange(N), k)
    b = (a + np.tile(np.arange(1, k + 1), N)) % N
    return (torch.relu(torch.diagonal(D) - (h.tau - h.delta)).sum()
            + torch.relu(h.tau + h.delta - D[a, b]).sum() / k) / N


def torch_read(torch, h, head_input):
    """What a head reads of NCHW maps ``h``, flattened in the encoder's (row, column, channel) order."""
    if head_input == "mean":
        return h.mean(dim=(2, 3))
    if head_input == "pool2":
        h = torch.nn.functional.avg_pool2d(h, 2)
    return h.permute(0, 2, 3, 1).reshape(len(h), -1)


def aligned(x, W, B, torch):
    """``W * x`` forward; backward to ``x`` through the kernel ``B`` (feedback alignment), to ``W`` as usual."""
    conv = torch.nn.functional.conv2d
    return conv(x.detach(), W, padding=1) + conv(x, B, padding=1) - conv(x, B, padding=1).detach()


def torch_encoder(torch, net, P, x, top, *, detach=None, fa=False, head_fb=None):
    """Head output of layer ``top`` (0-based) in torch (NCHW); ``detach``: the layer whose input is data;
    ``fa``: kernels send the error down through ``B``; ``head_fb``: the head's backward uses that matrix."""
    phi = torch_act(torch, net.activation)
    h = torch.tensor(x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2)
    for l in range(top + 1):
        W = P[f"{l + 1}/W"].permute(0, 3, 1, 2)
        h = h.detach() if l == detach else h
        a = (aligned(h, W, P[f"{l + 1}/B"].permute(0, 3, 1, 2), torch) if fa and l > 0
             else torch.nn.functional.conv2d(h, W, padding=1))
        h = a if net.specs[l].linear else phi(a)
        if net.specs[l].pool:
            h = torch.nn.functional.max_pool2d(h, 2)
    f = torch_read(torch, h, net.head_input)
    H = P[f"{top + 1}/H"]
    if head_fb is None:
        return f @ H.T
    return f.detach() @ H.T + f @ P[head_fb].T - (f @ P[head_fb].T).detach()


def torch_params(torch, params):
    return {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}


@pytest.mark.torch
@pytest.mark.parametrize("head_input", HEADS)
@pytest.mark.parametrize("activation", ["relu", "hardtanh", "tanh"])
@pytest.mark.parametrize("arch", [ARCH, [3, 4, "M"], [3, "L", "M", 4]])
def test_e2e_bp_equals_autograd(activation, arch, head_input):
    torch = pytest.importorskip("torch")
    net, x1, x2 = encoder("e2e", "bp", activation, arch, head_input=head_input)
    if activation == "hardtanh":                              # drives beyond +-1, so saturation shows
        net.params["1/W"] *= 4 if head_input == "mean" else 2   # (not so far that most maps are alike)
    hinge = thresholds(net, 1, x1, x2)
    res, grads = net.e2e_grads(x1, x2, hinge)
    P = torch_params(torch, net.params)
    loss = torch_hinge(torch, torch_encoder(torch, net, P, x1, 1), torch_encoder(torch, net, P, x2, 1), hinge)
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    assert 0 < res.active < 1
    assert sorted(grads) == ["1/W", "2/H", "2/W"]
    for k, g in grads.items():
        ref = P[k].grad.numpy()
        assert np.abs(ref).max() > 0 and rel_err(g, ref) < TOL, k


@pytest.mark.parametrize("head_input", HEADS)
def test_e2e_bp_matches_finite_differences(head_input):
    """Differences of the loss with view 1's embedding held fixed: its gradient is blocked."""
    net, x1, x2 = encoder("e2e", "bp", "tanh", head_input=head_input)
    hinge = thresholds(net, 1, x1, x2)
    res, grads = net.e2e_grads(x1, x2, hinge)
    e1 = net.head_inputs(x1)[1] @ net.params["2/H"].T
    for k in ("1/W", "2/W", "2/H"):
        def loss(P, k=k):
            moved = ConvViewEncoder(ARCH, "tanh", {**net.params, k: P}, head_input=head_input)
            return hinge_views(e1, moved.head_inputs(x2)[1] @ moved.params["2/H"].T, *hinge).loss
        assert rel_err(grads[k], fd_grad(loss, net.params[k].copy())) < 1e-6, k


@pytest.mark.parametrize("head_input", HEADS)
@pytest.mark.parametrize("layer", [0, 1])
def test_layerwise_bp_matches_finite_differences(layer, head_input):
    """Layer ``layer`` on its (data) input: differences of its head's loss in its kernel and head."""
    net, x1, x2 = encoder("gll", "bp", "tanh", head_input=head_input)
    hinge = thresholds(net, layer, x1, x2)
    h1, h2 = net.layer_input(x1, layer), net.layer_input(x2, layer)
    res, grads = net.layer_grads(layer, h1, h2, hinge, "bp")
    e1 = net.head_inputs(x1)[layer] @ net.params[f"{layer + 1}/H"].T
    for k in (f"{layer + 1}/W", f"{layer + 1}/H"):
        def loss(P, k=k):
            moved = ConvViewEncoder(ARCH, "tanh", {**net.params, k: P}, head_input=head_input)
            return hinge_views(e1, moved.head_inputs(x2)[layer] @ moved.params[f"{layer + 1}/H"].T, *hinge).loss
        assert rel_err(grads[k], fd_grad(loss, net.params[k].copy())) < 1e-6, k


@pytest.mark.torch
@pytest.mark.parametrize("arch, side, width", [([3, "M", 4], 10, 2 * 2 * 4), ([3, "L", "M", 4, "M"], 12, 1 * 1 * 4)])
def test_pool2_heads_drop_an_odd_last_row_and_column_as_torch_does(arch, side, width):
    """5 x 5 (and 3 x 3) maps: the 2 x 2 average pool leaves out the last row and column, and no error goes there."""
    torch = pytest.importorskip("torch")
    net, x1, x2 = encoder("e2e", "bp", "tanh", arch, side=side, head_input="pool2")
    assert net.params["2/H"].shape == (5, width)
    hinge = thresholds(net, 1, x1, x2)
    res, grads = net.e2e_grads(x1, x2, hinge)
    P = torch_params(torch, net.params)
    torch_hinge(torch, torch_encoder(torch, net, P, x1, 1), torch_encoder(torch, net, P, x2, 1), hinge).backward()
    for k, g in grads.items():
        assert rel_err(g, P[k].grad.numpy()) < TOL, k


@pytest.mark.torch
@pytest.mark.parametrize("head_input", HEADS)
def test_e2e_fa_uses_the_fixed_feedback_kernels_and_is_not_bp(head_input):
    torch = pytest.importorskip("torch")
    net, x1, x2 = encoder("e2e", "fa", head_input=head_input)
    hinge = thresholds(net, 1, x1, x2)
    res, grads = net.e2e_grads(x1, x2, hinge, feedback="fa")
    P = torch_params(torch, net.params)
    e1, e2 = (torch_encoder(torch, net, P, x, 1, fa=True, head_fb="2/B_H") for x in (x1, x2))
    torch_hinge(torch, e1, e2, hinge).backward()
    assert sorted(grads) == ["1/W", "2/H", "2/W"], "the feedback kernels stay fixed"
    for k, g in grads.items():
        assert rel_err(g, P[k].grad.numpy()) < TOL, k
    bp = net.e2e_grads(x1, x2, hinge, feedback="bp")[1]
    np.testing.assert_allclose(grads["2/H"], bp["2/H"], rtol=1e-12)       # the head gets its true gradient
    assert rel_err(grads["1/W"], bp["1/W"]) > 0.1 and rel_err(grads["2/W"], bp["2/W"]) > 0.1


@pytest.mark.torch
@pytest.mark.parametrize("head_input", HEADS)
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_layerwise_bp_equals_autograd_of_the_head_loss_with_the_input_detached(layer, activation, head_input):
    torch = pytest.importorskip("torch")
    net, x1, x2 = encoder("gll", "bp", activation, head_input=head_input)
    hinge = thresholds(net, layer, x1, x2)
    res, grads = net.layer_grads(layer, net.layer_input(x1, layer), net.layer_input(x2, layer), hinge, "bp")
    P = torch_params(torch, net.params)
    e1, e2 = (torch_encoder(torch, net, P, x, layer, detach=layer) for x in (x1, x2))
    loss = torch_hinge(torch, e1, e2, hinge)
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    assert sorted(grads) == [f"{layer + 1}/H", f"{layer + 1}/W"]
    for k, g in grads.items():
        assert rel_err(g, P[k].grad.numpy()) < TOL, k
    for k in set(P) - set(grads):
        assert P[k].grad is None or not P[k].grad.any(), f"{k} must not learn"


@pytest.mark.torch
@pytest.mark.parametrize("head_input", HEADS)
def test_rf_reaches_the_layer_through_the_fixed_random_matrix_and_is_not_bp(head_input):
    torch = pytest.importorskip("torch")
    net, x1, x2 = encoder("gll", "rf", head_input=head_input)
    hinge = thresholds(net, 1, x1, x2)
    h1, h2 = net.layer_input(x1, 1), net.layer_input(x2, 1)
    res, grads = net.layer_grads(1, h1, h2, hinge, "rf")
    P = torch_params(torch, net.params)
    e1, e2 = (torch_encoder(torch, net, P, x, 1, detach=1, head_fb="2/B_H") for x in (x1, x2))
    torch_hinge(torch, e1, e2, hinge).backward()            # dW = pool^T(G B_H / S) * phi'(a), windowed
    assert sorted(grads) == ["2/H", "2/W"], "RF's feedback matrix stays fixed"
    for k, g in grads.items():
        assert rel_err(g, P[k].grad.numpy()) < TOL, k
    bp = net.layer_grads(1, h1, h2, hinge, "bp")[1]
    np.testing.assert_allclose(grads["2/H"], bp["2/H"], rtol=1e-12)
    assert rel_err(grads["2/W"], bp["2/W"]) > 0.1


@pytest.mark.parametrize("head_input", HEADS)
def test_urf_feedback_gets_the_heads_update(head_input):
    net, x1, x2 = encoder("gll", "urf", head_input=head_input)
    hinge = thresholds(net, 0, x1, x2)
    res, grads = net.layer_grads(0, x1, x2, hinge, "urf")
    f2 = net.head_inputs(x2)[0]
    np.testing.assert_allclose(grads["1/H"], res.grad.T @ f2, rtol=1e-12)     # dH = G^T f
    assert np.array_equal(grads["1/B_H"], grads["1/H"])
    rf = net.layer_grads(0, x1, x2, hinge, "rf")[1]
    assert np.array_equal(grads["1/W"], rf["1/W"]), "the error reaches W through B_H, as in RF"


def test_conv_methods_weigh_negatives_as_the_settings_say():
    """[rule] negative_weight reaches the conv encoders' hinge (the Tang paper protocols' 1/5 per negative)."""
    net, x1, x2 = encoder("gll", "bp", "relu")
    H = net.params["1/H"]
    e1, e2 = (net.head_inputs(x)[0] @ H.T for x in (x1, x2))
    for weight in (0.0, 0.2):
        h = thresholds(net, 0, x1, x2)._replace(negative_weight=weight)
        want = hinge_views(e1, e2, h.tau, h.delta, h.negatives, weight)
        got = net.layer_grads(0, x1, x2, h)[0]
        assert float(got.loss) == pytest.approx(float(want.loss), rel=1e-12)
    e2e, y1, y2 = encoder("e2e", "bp", "relu")
    h = thresholds(e2e, e2e.n_layers - 1, y1, y2)
    losses = {w: float(e2e.e2e_grads(y1, y2, h._replace(negative_weight=w))[0].loss) for w in (0.0, 0.2)}
    assert losses[0.0] != pytest.approx(losses[0.2])           # 1/3 per negative against 0.2


def test_feedback_a_method_does_not_have_is_refused():
    net, x1, x2 = encoder("gll", "bp")
    with pytest.raises(ValueError, match="allowed: 'bp', 'fa'"):
        net.e2e_grads(x1, x2, HingeSettings(), "rf")
    with pytest.raises(ValueError, match="allowed: 'bp', 'rf', 'urf'"):
        net.layer_grads(0, x1, x2, HingeSettings(), "fa")


# ---------------------------------------------------------------------------------------------
# 3b. difference target propagation: targets through transposed-conv inverses, the inverses' own loss

DTP_ARCHS = [([3, "M", 4, "M", 5, "M"], "tanh", "flatten"),     # the authors' layout: every layer pooled
             ([3, "L", "M", 4, 5, "M"], "relu", "mean")]        # a linear layer, a layer without a pool


def dtp_case(arch, activation, head_input, dtype="float64"):
    rng = np.random.default_rng(4)
    net = ConvViewEncoder.init(arch, activation, "dtp", "", 5, rng, dtype=dtype, head_input=head_input,
                               size=(8, 8), init="torch")
    x1 = rng.random((6, 8, 8))
    x2 = x1 + 0.1 * rng.standard_normal(x1.shape)
    noise = {l: 0.5 * rng.standard_normal((12, *net.inverse_input_shape(l, (8, 8)))) for l in range(1, net.n_layers)}
    e1, e2 = (net.head_inputs(x)[-1] @ net.params[f"{net.n_layers}/H"].T for x in (x1, x2))
    D = np.abs(e1[:, None, :] - e2[None, :, :]).sum(-1)
    lo, hi = np.median(np.diag(D)), np.median(D[~np.eye(len(D), dtype=bool)])
    return net, x1, x2, noise, HingeSettings((lo + hi) / 2, abs(hi - lo) / 2 + 1e-3, 3)


@pytest.mark.torch
@pytest.mark.parametrize("arch, activation, head_input", DTP_ARCHS)
def test_conv_dtp_equals_autograd_of_the_authors_transposed_conv_inverses(arch, activation, head_input):
    """Every update of a DTP step against torch: the authors' ops (NetDTP: conv, max-pool, an inverse
    ConvTranspose2d(kernel_size=3, stride=2, padding=1, output_padding=1) with a bias; stride 1 where a layer has no
    pool), the top target from autograd of the hinge, targets as constants for the layer losses."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net, x1, x2, noise, hinge = dtp_case(arch, activation, head_input)
    alpha = 0.3
    res, grads = net.dtp_grads(x1, x2, hinge, alpha, noise)
    P = torch_params(torch, net.params)
    phi, L, N = torch_act(torch, activation), net.n_layers, len(x1)

    def up(h, l):
        a = F.conv2d(h, P[f"{l + 1}/W"].permute(0, 3, 1, 2), padding=1)
        a = a if net.specs[l].linear else phi(a)
        return F.max_pool2d(a, 2) if net.specs[l].pool else a

    def inverse(l, h):
        s = 2 if net.specs[l].pool else 1
        u = F.conv_transpose2d(h, P[f"{l + 1}/V"].permute(0, 3, 1, 2), P[f"{l + 1}/c"], stride=s, padding=1,
                               output_padding=s - 1)
        return u if net.specs[l].linear else phi(u)

    h1, h2 = [torch.tensor(x1[:, None])], [torch.tensor(x2[:, None])]
    for l in range(L):
        h1.append(up(h1[-1], l))
        h2.append(up(h2[-1], l))
    top = h2[L].detach().requires_grad_()
    H = P[f"{L}/H"]
    loss = torch_hinge(torch, torch_read(torch, h1[L], head_input) @ H.T, torch_read(torch, top, head_input) @ H.T,
                       hinge)
    loss.backward()
    assert abs(loss.item() - float(res.hinge.loss)) < 1e-12
    np.testing.assert_allclose(grads[f"{L}/H"], H.grad.numpy(), rtol=1e-9, atol=1e-12)
    targets = {L: (h2[L] - alpha * N * top.grad).detach()}
    for l in range(L - 1, 0, -1):
        targets[l] = (h2[l] - inverse(l, h2[l + 1]) + inverse(l, targets[l + 1])).detach()
    for l in range(L):
        P[f"{l + 1}/W"].grad = None
        layer_loss = ((h2[l + 1] - targets[l + 1]) ** 2).sum() / N
        layer_loss.backward(retain_graph=True)
        assert abs(layer_loss.item() - float(res.layer_losses[l])) < 1e-12 * max(1.0, layer_loss.item())
        assert rel_err(grads[f"{l + 1}/W"], P[f"{l + 1}/W"].grad.numpy()) < TOL, l
    for l in range(1, L):
        noisy = torch.cat([h2[l], h1[l]]).detach() + torch.tensor(noise[l]).permute(0, 3, 1, 2)
        inv_loss = ((inverse(l, up(noisy, l).detach()) - noisy) ** 2).sum() / (2 * N)
        inv_loss.backward()
        assert abs(inv_loss.item() - float(res.inverse_losses[l - 1])) < 1e-12 * inv_loss.item()
        for key in (f"{l + 1}/V", f"{l + 1}/c"):
            assert rel_err(grads[key], P[key].grad.numpy()) < TOL, key
    assert sorted(grads) == sorted(k for k in net.params)          # every weight learns, from one step


@pytest.mark.parametrize("arch, activation, head_input", DTP_ARCHS)
def test_conv_dtp_matches_finite_differences(arch, activation, head_input):
    """The layer losses (the step's targets held constant) and the inverses' reconstruction losses, numerically."""
    net, x1, x2, noise, hinge = dtp_case(arch, activation, head_input)
    res, grads = net.dtp_grads(x1, x2, hinge, 0.3, noise)
    targets = net.dtp_targets(x1, x2, hinge, 0.3)
    p, N = net.params, len(x1)
    for l in range(net.n_layers):
        h_in, W0 = net.layer_input(x2, l), p[f"{l + 1}/W"].copy()

        def layer_loss(W, l=l, h_in=h_in, W0=W0):
            p[f"{l + 1}/W"] = W
            out = net._up(l, h_in)[2]
            p[f"{l + 1}/W"] = W0
            return float(np.sum((out - targets[l]) ** 2) / N)

        assert layer_loss(W0) == pytest.approx(float(res.layer_losses[l]), rel=1e-12)
        assert rel_err(grads[f"{l + 1}/W"], fd_grad(layer_loss, W0.copy())) < 1e-6, l
    for l in range(1, net.n_layers):
        h_in = np.concatenate([net.layer_input(x2, l), net.layer_input(x1, l)])
        for key in (f"{l + 1}/V", f"{l + 1}/c"):
            P0 = p[key].copy()

            def inverse_loss(P, key=key, l=l, h_in=h_in, P0=P0):
                p[key] = P
                loss = float(net.inverse_grads(l, h_in, noise[l])[0])
                p[key] = P0
                return loss

            assert rel_err(grads[key], fd_grad(inverse_loss, P0.copy())) < 1e-6, key


def test_conv_dtp_targets_are_the_rates_when_the_top_does_not_move():
    """The difference correction: with alpha = 0 every target is its layer's output (to rounding: h - g + g),
    however far the inverses are from inverting, so no layer learns; with alpha > 0 the targets move."""
    net, x1, x2, noise, hinge = dtp_case(*DTP_ARCHS[0])
    rates = [net.layer_input(x2, l) for l in range(1, net.n_layers + 1)]
    for target, h in zip(net.dtp_targets(x1, x2, hinge, 0.0), rates):
        np.testing.assert_allclose(target, h, rtol=0, atol=1e-15)
    res, grads = net.dtp_grads(x1, x2, hinge, 0.0, noise)
    assert all(np.abs(grads[f"{l + 1}/W"]).max() < 1e-14 for l in range(net.n_layers))
    moved = net.dtp_targets(x1, x2, hinge, 0.3)
    assert all(np.abs(t - h).max() > 1e-3 for t, h in zip(moved, rates))


# ---------------------------------------------------------------------------------------------
# 4. Tang et al.'s encoders

def test_tang_architectures_are_the_authors_layer_sequences():
    """(channels, max-pool, linear) of every layer, as the authors' setup_net builds CONV6 and VGG6."""
    conv6 = [(s.channels, s.pool, s.linear) for s in parse_architecture("tang_conv6")]
    assert conv6 == [(32, False, False),       # conv 3 -> 32, hardtanh                     32 x 32
                     (32, True, True),         # conv 32 -> 32, max-pool (no non-linearity)  16 x 16
                     (64, False, False),       # conv 32 -> 64, hardtanh                     16 x 16
                     (64, True, True),         # conv 64 -> 64, max-pool                      8 x 8
                     (512, True, True)]        # conv 64 -> 512, max-pool                     4 x 4
    vgg6 = [(s.channels, s.pool, s.linear) for s in parse_architecture("tang_vgg6")]
    assert vgg6 == [(128, False, False), (256, True, False), (256, False, False), (512, True, False),
                    (1024, True, False), (1024, True, False)]       # 64 -> 32, 32, 16, 8, 4
    assert parse_architecture("tang_vgg6") == parse_architecture("vgg6")     # CLAPP's VGG-6 layers
    for bad in (["L", 3], [3, "M", "L"], [3, "L", "L"]):
        with pytest.raises(ValueError, match="'L' must follow a channel count"):
            parse_architecture(bad)


def test_tang_heads_have_the_authors_sizes_and_fan_in():
    """CONV6: Linear(C h w, head) on the flattened map; VGG6: on the flattened 2 x 2 average pool of it."""
    conv6 = ConvViewEncoder.init("tang_conv6", "hardtanh", "gll", "rf", 8, np.random.default_rng(0), in_channels=3,
                                 head_input="flatten", size=(32, 32)).params
    assert [conv6[f"{l}/H"].shape[1] for l in range(1, 6)] == [32 * 32 * 32, 32 * 16 * 16, 64 * 16 * 16,
                                                               64 * 8 * 8, 512 * 4 * 4]
    assert conv6["1/W"].shape == (32, 3, 3, 3)                           # RGB
    assert np.var(conv6["5/H"]) == pytest.approx(1 / 8192, rel=0.05)    # N(0, 1 / fan-in)
    assert np.var(conv6["1/B_H"]) == pytest.approx(1 / 32768, rel=0.05)
    vgg6 = ConvViewEncoder.init("tang_vgg6", "hardtanh", "gll", "bp", 1, np.random.default_rng(0), in_channels=3,
                                head_input="pool2", size=(64, 64)).params
    assert [vgg6[f"{l}/H"].shape[1] for l in range(1, 7)] == [128 * 32 * 32, 256 * 16 * 16, 256 * 16 * 16,
                                                              512 * 8 * 8, 1024 * 4 * 4, 1024 * 2 * 2]
    with pytest.raises(ValueError, match="pass the input size"):
        ConvViewEncoder.init(ARCH, "relu", "e2e", "bp", 5, np.random.default_rng(0), head_input="flatten")
    with pytest.raises(ValueError, match="'pool2' averages 2 x 2 windows.*1 x 1"):
        ConvViewEncoder.init(ARCH, "relu", "e2e", "bp", 5, np.random.default_rng(0), head_input="pool2",
                             size=(4, 4))
    assert SETTINGS["rule.head_input"]["choices"] == HEAD_INPUTS and SETTINGS["rule.head_input"]["default"] == "mean"
    with pytest.raises(ValueError, match="unknown head_input 'max'; allowed: 'mean', 'flatten', 'pool2'"):
        ConvViewEncoder.init(ARCH, "relu", "e2e", "bp", 5, np.random.default_rng(0), head_input="max")
    net = ConvViewEncoder.init(ARCH, "relu", "e2e", "bp", 5, np.random.default_rng(0), head_input="flatten",
                               size=(8, 8))
    with pytest.raises(ValueError, match="head of layer 2 has 16 inputs.*gives 36"):
        net.e2e_grads(np.zeros((2, 12, 12)), np.zeros((2, 12, 12)), HingeSettings())


def test_torch_init_draws_every_weight_as_pytorch_defaults_do():
    """init = 'torch': kernels, feedback kernels, heads and B_H ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the
    authors' nn.Conv2d / nn.Linear layers and their kaiming_uniform_(a=sqrt(5)) feedback weights start."""
    for process, feedback, keys in (("e2e", "fa", ("1/W", "2/W", "5/W", "2/B", "5/H", "5/B_H")),
                                    ("gll", "bp", ("1/W", "1/H", "5/H"))):
        p = ConvViewEncoder.init("tang_conv6", "hardtanh", process, feedback, 8, np.random.default_rng(0),
                                 in_channels=3, head_input="flatten", size=(32, 32), init="torch").params
        for key in keys:
            bound = 1 / np.sqrt(np.prod(p[key].shape[1:]))          # kernels (C, 3, 3, C_in), heads (m, width)
            assert np.abs(p[key]).max() <= bound, key
            assert np.abs(p[key]).max() > 0.95 * bound, key                    # uniform: it reaches the edge
            assert np.std(p[key]) == pytest.approx(bound / np.sqrt(3), rel=0.1), key
        assert p["1/W"].shape[1:] == (3, 3, 3)                                  # RGB: fan_in 27
    he = ConvViewEncoder.init("tang_conv6", "hardtanh", "gll", "bp", 8, np.random.default_rng(0), in_channels=3,
                              head_input="flatten", size=(32, 32)).params
    assert np.std(he["2/W"]) == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.05)   # the default: He-normal
    with pytest.raises(ValueError, match="unknown init 'xavier'; allowed: 'he', 'torch'"):
        ConvViewEncoder.init(ARCH, "relu", "e2e", "bp", 5, np.random.default_rng(0), init="xavier")


def test_the_tang_paper_protocols_start_as_the_authors_layers():
    for path in sorted((ROOT / "protocols").glob("tang_*_paper.toml")):
        assert load(path).model.init == "torch", path.name


EVERY = (("e2e", "bp"), ("e2e", "fa"), ("gll", "bp"), ("gll", "rf"), ("gll", "urf"))


@pytest.mark.parametrize("arch, side, head_input, methods", [
    ("tang_conv6", 8, "flatten", EVERY),
    ("tang_vgg6", 32, "pool2", (("e2e", "fa"), ("gll", "urf"))),     # 16 M weights: one e2e, one layer-wise
])
def test_tang_encoders_take_one_step_on_rgb_images(arch, side, head_input, methods):
    """Tiny RGB batches (the channels come from the images): each method's gradients, shaped as its weights."""
    rng = np.random.default_rng(0)
    x1 = rng.random((3, side, side, 3)).astype(np.float32)
    x2 = (x1 + 0.05 * rng.standard_normal(x1.shape)).astype(np.float32)
    hinge = HingeSettings(2.0, 1.0, 1)
    for process, feedback in methods:
        net = ConvViewEncoder.init(arch, "hardtanh", process, feedback, 4, np.random.default_rng(1), in_channels=3,
                                   head_input=head_input, size=(side, side))
        if process == "e2e":
            res, grads = net.e2e_grads(x1, x2, hinge, feedback)
            assert len(grads) == net.n_layers + 1
        else:
            for l in (0, net.n_layers - 1):
                res, grads = net.layer_grads(l, net.layer_input(x1, l), net.layer_input(x2, l), hinge, feedback)
                assert sorted(grads) == sorted([f"{l + 1}/W", f"{l + 1}/H"] + ([f"{l + 1}/B_H"] if feedback == "urf"
                                                                               else []))
        assert np.isfinite(res.loss) and res.loss > 0
        for k, g in grads.items():
            assert g.shape == net.params[k].shape and g.dtype == np.float32 and np.isfinite(g).all(), k
        assert any(np.abs(g).max() > 0 for g in grads.values())


# ---------------------------------------------------------------------------------------------
# 5. the engine

def quick(method, *sets):
    return load(ROOT / "protocols" / f"tang_{method}_quick.toml", ['model.arch="small"', *sets])


def test_conv_encoders_for_every_hinge_method():
    for name, rule in RULES.items():
        if rule.family == "views":
            engine.check(quick(name[len("hinge_"):]))
    with pytest.raises(ProtocolError, match=r"\[rule\] offsets = \[2\]: not read by rule"):
        engine.check(quick("gll_bp", "rule.offsets=[2]"))


def test_views_are_random_windows_and_the_probe_reads_the_centre_window():
    from neuroplastic.data.augment import augment, random_window
    from neuroplastic.engines.numpy.learners import learner
    from neuroplastic.engines.prepare import prepare

    images = np.random.default_rng(0).random((30, 8, 8))
    views = augment(images, np.random.default_rng(1), crop_pad=0, jitter_strength=0.0, window=5)
    for view, im in zip(views, images):                     # each view is one 5 x 5 window of its own image
        assert sum(np.array_equal(view, im[t:t + 5, l:l + 5]) for t in range(4) for l in range(4)) == 1
    assert len({tuple(v[0, :2]) for v in views}) > 20
    np.testing.assert_array_equal(random_window(images, None, 5), images[:, 1:6, 1:6])
    # the engine: views of 6 x 6 windows of the 8 x 8 digits train a conv encoder; features of the centre windows
    protocol = quick("gll_bp", "stimulus.crop=6", "data.max_samples=40", "train.batch_size=8")
    engine.check(protocol)
    prepared = prepare(protocol)
    model = learner(protocol, prepared, np.random.default_rng(0))
    model.step(np.arange(8), np.random.default_rng(1), 0, 10)
    probe = prepared.probe_set()
    ref = learner(quick("gll_bp", "data.max_samples=40"), prepare(quick("gll_bp", "data.max_samples=40")),
                  np.random.default_rng(0))
    centre = random_window(np.asarray(probe.dataset.samples, dtype=np.float32), None, 6)
    expected = [f[:, None, :] for f in type(ref.net)(ref.net.arch, ref.net.activation, model.params, 1).features(centre)]
    for got, want in zip(model.features(model.params, probe), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ProtocolError, match=r"\[stimulus\] crop = 9: larger than the images \(8 x 8\)"):
        prepare(quick("gll_bp", "stimulus.crop=9"))


def test_head_input_reaches_the_conv_encoder_and_is_refused_where_it_means_nothing():
    from neuroplastic.engines.numpy.learners import learner
    from neuroplastic.engines.prepare import prepare

    protocol = quick("gll_bp", 'model.arch="tang_conv6"', 'rule.head_input="flatten"', "data.max_samples=40",
                     "rule.head=4", 'model.activation="hardtanh"')
    engine.check(protocol)
    prepared = prepare(protocol)
    net = learner(protocol, prepared, np.random.default_rng(0))               # digits: 8 x 8 grey
    assert net.net.head_input == "flatten" and net.params["1/H"].shape == (4, 8 * 8 * 32)
    assert net.params["5/H"].shape == (4, 1 * 1 * 512)
    assert np.isfinite(net.step(prepared.train_idx[:6], np.random.default_rng(1), 0, 5)[1]["loss"])
    dense = load(ROOT / "protocols" / "tang_gll_bp_quick.toml", ['rule.head_input="pool2"'])
    with pytest.raises(ProtocolError, match=r"\[rule\] head_input = 'pool2': a dense encoder's heads.*'mean'"):
        engine.check(dense)
    clapp = load(ROOT / "protocols" / "clapp_s_conv_quick.toml", ['model.arch="tang_conv6"'])
    with pytest.raises(ProtocolError, match=r"\[model\] arch = 'tang_conv6': its linear layers.*'tang_vgg6'"):
        engine.check(clapp)


TINY = ['model.arch="small"', "data.max_samples=200", "train.epochs=3", "train.batch_size=32", "rule.head=8"]


def test_conv_method_runs_through_the_cli_and_resumes_bit_identically(tmp_path):
    """RLL: its random layer choices come from the training generator, which the checkpoint must restore."""
    path = ROOT / "protocols" / "tang_rll_quick.toml"
    directory, summary = assert_cli_resume_is_bit_identical(path, TINY, tmp_path, epochs=3)
    assert set(summary["probe"]) == set(summary["probe_random"]) == {"1", "2"}
    with np.load(directory / "features.npz") as f:
        assert f["layer1"].shape[1] == 32 and f["layer2"].shape[1] == 64       # spatial means of the maps
    with np.load(directory / "checkpoints" / "epoch_0003.npz") as a:
        assert a["param/2/W"].shape == (64, 3, 3, 32)
