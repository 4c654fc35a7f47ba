"""The hinge rules of Tang, Yang & Amit 2022 on every array back end: torch and CuPy give numpy's updates.

The same code runs on numpy, torch (CPU, CUDA) and CuPy arrays. For every method (end-to-end BP and FA;
GLL and RLL with BP, RF and URF feedback; DTP; conv end-to-end and layer-wise with heads on the mean, the
flattened map and its 2 x 2 average pool, grey and RGB images), the loss, the active fraction and every
(pseudo-)gradient computed from float64 arrays of another back end equal the numpy ones to < 1e-12
(relative to the largest value), and the arrays come back in the input's namespace and device. Torch CPU
always runs; torch CUDA and CuPy only where present.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neuroplastic.rules.hinge import hinge_views
from neuroplastic.rules.hinge_conv import ConvViewEncoder
from neuroplastic.rules.hinge_dense import ViewEncoder
from neuroplastic.rules.hinge_layers import ACTIVATIONS, forward
from neuroplastic.rules.hinge_methods import HingeSettings, dtp_grads

pytestmark = pytest.mark.torch

TOL = 1e-12
SIZES = [10, 9, 7, 6]                    # three dense layers: a hidden layer between two others
SMALL = [3, "M", 4, "M"]                 # 8 x 8 grey images -> 4 x 4 -> 2 x 2 maps
CONV6 = [3, 3, "L", "M", 4, 4, "L", "M", 5, "L", "M"]   # tang_conv6's layer sequence with a few channels


class Backend:
    """Moves float64 numpy arrays to a back end and back, and tells its arrays apart from numpy's."""

    def __init__(self, name):
        self.name = name
        if name == "cupy":
            self.cupy = pytest.importorskip("cupy")
            if self.cupy.cuda.runtime.getDeviceCount() == 0:
                pytest.skip("CuPy finds no CUDA device")
        elif name == "torch-cuda" and not torch.cuda.is_available():
            pytest.skip("torch finds no CUDA device")
        self.device = torch.device("cuda" if name == "torch-cuda" else "cpu")

    def to(self, a):
        if self.name == "cupy":
            return self.cupy.asarray(a)
        return torch.asarray(a, device=self.device)

    def native(self, a):
        if self.name == "cupy":
            return isinstance(a, self.cupy.ndarray)
        return isinstance(a, torch.Tensor) and a.device.type == self.device.type

    def back(self, a):
        return self.cupy.asnumpy(a) if self.name == "cupy" else a.cpu().numpy()


@pytest.fixture(params=["torch-cpu", "torch-cuda", "cupy"])
def be(request):
    return Backend(request.param)


def same(be, got, want, what):
    """``got`` (back end) is an array of the back end equal to ``want`` (numpy); lists, dicts and tuples alike."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), what
        for k in want:
            same(be, got[k], want[k], f"{what}[{k}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            same(be, g, w, f"{what}[{i}]")
    elif want is None:
        assert got is None, what
    elif np.ndim(want) == 0:                   # a loss: a 0-d array of the back end, read once per batch
        assert be.native(got) and tuple(got.shape) == (), f"{what}: a {type(got).__name__}, not a 0-d {be.name} array"
        assert abs(float(got) - float(want)) <= TOL * max(abs(float(want)), 1e-300), (what, got, want)
    else:
        assert be.native(got), f"{what}: a {type(got).__name__}, not an array of {be.name}"
        g = be.back(got)
        assert g.shape == want.shape and g.dtype == want.dtype, (what, g.shape, want.shape, g.dtype, want.dtype)
        scale = np.abs(want).max(initial=0.0)
        assert scale > 0, f"{what}: all zeros, nothing compared"
        assert np.abs(g - want).max() / scale < TOL, (what, np.abs(g - want).max() / scale)


def same_hinge(be, got, want, what):
    """A HingeResult: the fraction exactly (a count), the loss and gradient to TOL; some terms on, some off.
    Loss and fraction are 0-d arrays of the back end (read from the device once per batch, not per value)."""
    assert 0 < want.active < 1, f"{what}: every hinge term {'on' if want.active else 'off'}, a weak comparison"
    assert be.native(got.active) and float(got.active) == float(want.active), (what, got.active, want.active)
    same(be, got.loss, np.asarray(want.loss), what + ".loss")
    same(be, got.grad, want.grad, what + ".grad")


def settings(e1, e2, negatives=2):
    """tau, delta with the margins at the median positive and negative distances: terms on and off."""
    D = np.abs(e1[:, None, :] - e2[None, :, :]).sum(-1)
    N = len(D)
    lo = np.median(np.diag(D))
    hi = np.median([D[a, (a + s) % N] for a in range(N) for s in range(1, negatives + 1)])
    return HingeSettings((lo + hi) / 2, abs(hi - lo) / 2 + 1e-3, negatives)


def on(be, params):
    return {k: be.to(v) for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# the loss and the dense layers

def test_hinge_loss_gradient_and_active_fraction(be):
    rng = np.random.default_rng(0)
    e1, e2 = rng.standard_normal((2, 9, 5))
    for k in (None, 1, 3, 20):
        h = settings(e1, e2, 8 if k is None or k > 8 else k)
        same_hinge(be, hinge_views(be.to(e1), be.to(e2), h.tau, h.delta, k),
                   hinge_views(e1, e2, h.tau, h.delta, k), f"negatives={k}")
    r32 = hinge_views(be.to(e1.astype(np.float32)), be.to(e2.astype(np.float32)), 6.0, 1.0, 3)
    assert be.native(r32.grad) and str(r32.grad.dtype).endswith("float32")      # the embeddings' dtype


def test_activations_and_forward(be):
    rng = np.random.default_rng(1)
    a = 2 * rng.standard_normal((20, 7))
    for name, (phi, dphi) in ACTIVATIONS.items():
        same(be, [phi(be.to(a)), dphi(be.to(a))], [phi(a), dphi(a)], name)
    net = ViewEncoder.init(SIZES, "tanh", "e2e", "bp", 6, np.random.default_rng(2), dtype="float64")
    x = rng.random((8, SIZES[0]))
    same(be, forward(on(be, net.params), be.to(x), "tanh"), forward(net.params, x, "tanh"), "forward")


DENSE = [("e2e", "bp"), ("e2e", "fa"), ("gll", "bp"), ("gll", "rf"), ("gll", "urf"), ("rll", "bp"), ("rll", "rf"),
         ("rll", "urf")]


def dense_case(process, feedback, activation, seed=3, N=8):
    rng = np.random.default_rng(seed)
    net = ViewEncoder.init(SIZES, activation, process, feedback, 6, rng, dtype="float64")
    x1 = rng.random((N, SIZES[0]))
    x2 = x1 + 0.3 * rng.standard_normal(x1.shape)
    return net, x1, x2, rng


@pytest.mark.parametrize("activation", ["relu", "hardtanh", "tanh"])
@pytest.mark.parametrize("process, feedback", DENSE)
def test_dense_methods(be, process, feedback, activation):
    net, x1, x2, _ = dense_case(process, feedback, activation)
    tnet = ViewEncoder(net.sizes, activation, on(be, net.params))
    t1, t2 = be.to(x1), be.to(x2)
    same(be, tnet.features(t1), net.features(x1), "features")
    same_updates(be, net, tnet, x1, x2, net.features(x1), net.features(x2), process, feedback)


def same_updates(be, net, tnet, x1, x2, f1, f2, process, feedback):
    """Every gradient of ``process`` (end to end, or layer by layer) on the back end equals numpy's.

    ``net`` holds numpy weights, ``tnet`` the same on the back end; ``f1``, ``f2`` are what the heads
    read of each layer for the two views (numpy), so each hinge's settings are chosen from the data.
    """
    t1, t2 = be.to(x1), be.to(x2)
    if process == "e2e":
        H = net.params[f"{net.n_layers}/H"]
        h = settings(f1[-1] @ H.T, f2[-1] @ H.T)
        res, grads = net.e2e_grads(x1, x2, h, feedback)
        tres, tgrads = tnet.e2e_grads(t1, t2, h, feedback)
        same_hinge(be, tres, res, "e2e")
        same(be, tgrads, grads, "e2e grads")
        return
    for l in range(net.n_layers):
        h1, h2 = net.layer_input(x1, l), net.layer_input(x2, l)
        th1, th2 = tnet.layer_input(t1, l), tnet.layer_input(t2, l)
        if l:
            same(be, [th1, th2], [h1, h2], f"layer {l} input")
        H = net.params[f"{l + 1}/H"]
        h = settings(f1[l] @ H.T, f2[l] @ H.T)
        res, grads = net.layer_grads(l, h1, h2, h, feedback)
        tres, tgrads = tnet.layer_grads(l, th1, th2, h, feedback)
        same_hinge(be, tres, res, f"layer {l}")
        same(be, tgrads, grads, f"layer {l} grads")


@pytest.mark.parametrize("activation", ["relu", "hardtanh", "tanh"])
def test_dtp(be, activation):
    net, x1, x2, rng = dense_case("dtp", "", activation)
    noise = {l: 0.1 * rng.standard_normal((2 * len(x1), SIZES[l])) for l in range(1, net.n_layers)}
    h = settings(*(net.features(x)[-1] @ net.params[f"{net.n_layers}/H"].T for x in (x1, x2)))
    res, grads = dtp_grads(net.params, activation, x1, x2, h, 0.05, noise)
    assert len(res.inverse_losses) == net.n_layers - 1
    P, t1, t2 = on(be, net.params), be.to(x1), be.to(x2)
    for how, nz in (("numpy noise", noise), ("noise on the back end", on(be, noise))):
        tres, tgrads = dtp_grads(P, activation, t1, t2, h, 0.05, nz)
        same_hinge(be, tres.hinge, res.hinge, how)
        same(be, tres.layer_losses, res.layer_losses, how + ": layer losses")
        same(be, tres.inverse_losses, res.inverse_losses, how + ": inverse losses")
        same(be, tgrads, grads, how + ": grads")


# ---------------------------------------------------------------------------------------------
# the conv encoders

CONV = [  # arch, side, channels, head_input, activation
    (SMALL, 8, 1, "mean", "relu"),
    (SMALL, 8, 1, "flatten", "tanh"),
    (SMALL, 8, 1, "pool2", "hardtanh"),
    (CONV6, 8, 3, "flatten", "hardtanh"),
    (CONV6, 8, 3, "mean", "relu"),
    (CONV6, 16, 3, "pool2", "tanh"),
]
METHODS = [("e2e", "bp"), ("e2e", "fa"), ("gll", "bp"), ("gll", "rf"), ("gll", "urf"), ("rll", "urf")]


@pytest.mark.parametrize("process, feedback", METHODS)
@pytest.mark.parametrize("arch, side, channels, head_input, activation", CONV,
                         ids=[f"{'conv6' if c[0] is CONV6 else 'small'}-{c[1]}-{c[2]}ch-{c[3]}-{c[4]}" for c in CONV])
def test_conv_methods(be, process, feedback, arch, side, channels, head_input, activation):
    rng = np.random.default_rng(4)
    net = ConvViewEncoder.init(arch, activation, process, feedback, 4, rng, in_channels=channels, dtype="float64",
                               head_input=head_input, size=(side, side))
    shape = (6, side, side) if channels == 1 else (6, side, side, channels)
    x1 = rng.random(shape)
    x2 = x1 + 0.1 * rng.standard_normal(shape)
    tnet = ConvViewEncoder(arch, activation, on(be, net.params), channels, head_input)
    t1, t2 = be.to(x1), be.to(x2)
    same(be, tnet.features(t1, batch=4), net.features(x1, batch=4), "features")
    f1, f2 = net.head_inputs(x1), net.head_inputs(x2)
    same(be, tnet.head_inputs(t2, batch=4), f2, "head inputs")
    same_updates(be, net, tnet, x1, x2, f1, f2, process, feedback)


@pytest.mark.parametrize("arch, side, channels, head_input, activation", CONV[:2] + CONV[3:4],
                         ids=["small-mean-relu", "small-flatten-tanh", "conv6-flatten-hardtanh"])
def test_conv_dtp(be, arch, side, channels, head_input, activation):
    """Targets through the transposed-conv inverses, the layer and inverse losses, every update."""
    rng = np.random.default_rng(5)
    net = ConvViewEncoder.init(arch, activation, "dtp", "", 4, rng, in_channels=channels, dtype="float64",
                               head_input=head_input, size=(side, side), init="torch")
    shape = (6, side, side) if channels == 1 else (6, side, side, channels)
    x1 = rng.random(shape)
    x2 = x1 + 0.1 * rng.standard_normal(shape)
    noise = {l: 0.5 * rng.standard_normal((12, *net.inverse_input_shape(l, (side, side))))
             for l in range(1, net.n_layers)}
    h = settings(*(net.head_inputs(x)[-1] @ net.params[f"{net.n_layers}/H"].T for x in (x1, x2)))
    res, grads = net.dtp_grads(x1, x2, h, 0.3, noise)
    tnet = ConvViewEncoder(arch, activation, on(be, net.params), channels, head_input)
    tres, tgrads = tnet.dtp_grads(be.to(x1), be.to(x2), h, 0.3, on(be, noise))
    same_hinge(be, tres.hinge, res.hinge, "dtp")
    same(be, tres.layer_losses, res.layer_losses, "layer losses")
    same(be, tres.inverse_losses, res.inverse_losses, "inverse losses")
    same(be, tgrads, grads, "grads")
