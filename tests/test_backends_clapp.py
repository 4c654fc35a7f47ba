"""The CLAPP family on every array back end: one code path for numpy, torch (CPU, CUDA) and CuPy.

A step computed from torch tensors (or CuPy arrays) must be the numpy step, to rounding: dense,
retinotopic and conv CLAPP and CLAPP-s (both samplings of the conv rule, both scores), their Adam updates and state,
losses and modulated fractions, the features, the conv primitives and the optimisers. Every result
must come back as an array of the input's namespace and device, never numpy. Torch CPU float64 runs
whenever torch is installed; CUDA and CuPy only where present.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.conv_stack import ConvClappStack
from neuroplastic.engines.numpy.optim import SGD, Adam, GroupedOptimizer
from neuroplastic.rules import clapp_pairs, conv_clapp_layer, retro_distance, stack_rates
from neuroplastic.rules import conv
from neuroplastic.rules.retinotopic import Layout, stack_layouts
from neuroplastic.rules.conv import conv2d, conv2d_input_grad, conv2d_weight_grad, maxpool2, maxpool2_backward, relu_

pytestmark = pytest.mark.torch

TOL = 1e-12     # max abs difference relative to the max abs value, float64


class Backend:
    """Moves numpy arrays to one back end and back, and says whether an array is one of its own."""

    def __init__(self, name: str):
        self.name = name
        if name == "cupy":
            import cupy
            self.cupy = cupy
        else:
            self.device = torch.device("cuda" if name == "torch-cuda" else "cpu")

    def to(self, a):
        """A copy of ``a`` on the back end (a copy: the numpy run must not see the other's in-place updates)."""
        if self.name == "cupy":
            return self.cupy.array(a)
        return torch.tensor(np.asarray(a), device=self.device)

    def back(self, a):
        if self.name == "cupy":
            return self.cupy.asnumpy(a)
        return a.detach().cpu().numpy()

    def native(self, a) -> bool:
        if self.name == "cupy":
            return isinstance(a, self.cupy.ndarray)
        return isinstance(a, torch.Tensor) and a.device.type == self.device.type

    def same(self, got, ref, what: str):
        """``got`` is an array of this back end equal to the numpy ``ref`` to TOL."""
        assert self.native(got), f"{what}: a {type(got).__name__}, not an array of {self.name}"
        got, ref = self.back(got), np.asarray(ref)
        assert got.shape == ref.shape and got.dtype == ref.dtype, f"{what}: {got.shape} {got.dtype} vs {ref.shape} {ref.dtype}"
        assert _rel(got, ref) < TOL, f"{what}: relative difference {_rel(got, ref):.3g}"


def _rel(got, ref) -> float:
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    if ref.size == 0:
        return 0.0
    diff = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else diff


def _floats(got, ref, what: str):
    assert all(type(v) is float for v in got), f"{what}: {got} are not Python floats"
    assert _rel(got, ref) < TOL, f"{what}: {got} vs {ref}"


@pytest.fixture(params=["torch-cpu", "torch-cuda", "cupy"])
def be(request):
    if request.param == "torch-cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    if request.param == "cupy":
        cupy = pytest.importorskip("cupy")
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                pytest.skip("no CUDA device for CuPy")
        except Exception:                                           # noqa: BLE001 (CuPy without a driver)
            pytest.skip("no CUDA device for CuPy")
    if request.param == "torch-cpu":
        # Every array the code creates must be made on its input's device: with the default device
        # "meta", one made without ``device=`` (or a numpy array taken in without one) cannot meet
        # the CPU tensors in arithmetic, as a CPU array could not meet CUDA ones.
        with torch.device("meta"):
            yield Backend(request.param)
    else:
        yield Backend(request.param)


def _same_optimiser(be, opt, ref, what):
    state, ref_state = opt.state_dict(), ref.state_dict()
    assert state.keys() == ref_state.keys()
    for key, value in ref_state.items():
        if isinstance(value, (int, float)):
            assert state[key] == value, f"{what} {key}"
        else:
            be.same(state[key], value, f"{what} {key}")


# ---------------------------------------------------------------------------------------------
# dense CLAPP / CLAPP-s

@pytest.mark.parametrize("wiring", ["dense", "retinotopic"])
@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_dense_train_batch_equals_numpy(be, rule, wiring):
    rng = np.random.default_rng(0)
    if wiring == "dense":
        sizes, layouts = [6, 5, 4], None
    else:                         # 4 x 4 inputs -> 3 x 3 x 2 -> 2 x 2 x 3, one score per location
        layouts = stack_layouts(16, [2, 3], "retinotopic", patch=4, kernel=[2], stride=[1])
        sizes = [16, *(lay.n for lay in layouts)]
    ref = ClappStack.init(sizes, rule, rng, dtype="float64", pred_init_scale=2.0, layouts=layouts)
    x = rng.standard_normal((5, 4, sizes[0]))
    net = ClappStack(ref.sizes, rule, {k: be.to(v) for k, v in ref.params.items()}, ref.layouts)
    xb = be.to(x)
    opt_ref, opt = Adam(0.01), Adam(0.01)
    draws = np.random.default_rng(1)
    for step in range(2):                                           # the second step updates Adam's state in place
        shifts, weights = ref.pair_sets(5, 4, draws, negatives=3, saccade_prob=0.5)
        assert isinstance(weights, np.ndarray)                      # draws stay numpy on every back end
        s_ref = ref.train_batch(x, opt_ref, shifts, weights)
        s = net.train_batch(xb, opt, shifts, weights)
        _floats(s.loss, s_ref.loss, f"step {step} losses")
        _floats(s.modulated, s_ref.modulated, f"step {step} modulated")
        assert 0 < min(s_ref.modulated) and max(s_ref.modulated) < 1    # the gates are neither all on nor all off
    assert net.params.keys() == ref.params.keys()
    for k, v in ref.params.items():
        be.same(net.params[k], v, k)
    _same_optimiser(be, opt, opt_ref, "Adam")
    for l, (f, f_ref) in enumerate(zip(net.features(xb), ref.features(x))):
        be.same(f, f_ref, f"features of layer {l + 1}")
    for l, (f, f_ref) in enumerate(zip(stack_rates(net.params, xb[:, 0]), stack_rates(ref.params, x[:, 0]))):
        be.same(f, f_ref, f"rates of layer {l + 1} (2-D input)")


@pytest.mark.parametrize("retinotopic", [False, True])
@pytest.mark.parametrize("retro", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_clapp_pairs_and_retro_distance_equal_numpy(be, retro, weighted, retinotopic):
    rng = np.random.default_rng(2)
    # retinotopic: 3 x 3 inputs -> 2 x 2 locations of 2 neurons (8 = 4 x 2), a score per location
    layout = Layout.retinotopic(3, 1, 2, 1, 2) if retinotopic else None
    n, n_in = (8, 9) if retinotopic else (5, 6)
    W, W_pred, W_retro = rng.standard_normal((n, n_in)), rng.standard_normal((n, n)), rng.standard_normal((n, n))
    x, x_prev = rng.standard_normal((7, n_in)), rng.standard_normal((7, n_in))
    y = np.where(rng.random(7) < 0.5, 1.0, -1.0)
    w = rng.random(7) if weighted else None
    ref = clapp_pairs(W, W_pred, x, x_prev, y, W_retro=W_retro if retro else None, weights=w, layout=layout)
    got = clapp_pairs(*map(be.to, (W, W_pred, x, x_prev, y)), W_retro=be.to(W_retro) if retro else None,
                      weights=None if w is None else be.to(w), layout=layout)
    for field, value in ref._asdict().items():
        if value is None:
            assert getattr(got, field) is None, field
        else:
            be.same(getattr(got, field), value, field)
    assert 0 < float(np.mean(ref.gamma != 0)) < 1
    d = retro_distance(be.to(W_pred), be.to(W_retro))
    assert type(d) is float and abs(d - retro_distance(W_pred, W_retro)) < TOL


# ---------------------------------------------------------------------------------------------
# conv primitives

@pytest.mark.parametrize("stride,padding", [(1, 1), (1, 0), (2, 1)])
@pytest.mark.parametrize("block_bytes", [10 ** 9, 2000])            # one block, or one map per block
@pytest.mark.parametrize("kernels", [True, False], ids=["torch_kernels", "im2col"])
def test_conv_primitives_equal_numpy(be, stride, padding, block_bytes, kernels, monkeypatch):
    # torch tensors go through torch's own kernels for large maps and im2col for small ones: both paths
    monkeypatch.setattr(conv, "TORCH_KERNEL_MIN_LOCATIONS", 0 if kernels else 10 ** 9)
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((3, 7, 6, 2)), rng.standard_normal((4, 3, 3, 2))
    a = conv2d(x, W, stride, padding, block_bytes=block_bytes)
    be.same(conv2d(be.to(x), be.to(W), stride, padding, block_bytes=block_bytes), a, "conv2d")
    delta = rng.standard_normal(a.shape)
    be.same(conv2d_weight_grad(be.to(x), be.to(delta), 3, stride, padding, block_bytes=block_bytes),
            conv2d_weight_grad(x, delta, 3, stride, padding, block_bytes=block_bytes), "weight gradient")
    be.same(conv2d_input_grad(be.to(delta), be.to(W), stride, padding, size=(7, 6), block_bytes=block_bytes),
            conv2d_input_grad(delta, W, stride, padding, size=(7, 6), block_bytes=block_bytes), "input gradient")


def test_relu_and_maxpool_equal_numpy(be):
    rng = np.random.default_rng(4)
    z = relu_(rng.standard_normal((2, 5, 7, 3)))
    z[0, 0, 0, 0] = z[0, 0, 1, 0] = z[0, 1, 0, 0] = 2.5                # a tie: the first maximum takes the gradient
    zb = relu_(be.to(z))
    be.same(zb, z, "relu")
    pooled = maxpool2(z)
    be.same(maxpool2(zb), pooled, "max-pool")
    delta = rng.standard_normal(pooled.shape)
    for relu in (False, True):
        ref = maxpool2_backward(z, pooled, delta, relu=relu, out=z.copy())
        out = be.to(z)
        got = maxpool2_backward(out, maxpool2(out), be.to(delta), relu=relu, out=out)
        be.same(got, ref, f"max-pool backward (relu={relu}, in place)")
        be.same(maxpool2_backward(zb, maxpool2(zb), be.to(delta), relu=relu), ref, f"max-pool backward (relu={relu})")


# ---------------------------------------------------------------------------------------------
# conv CLAPP / CLAPP-s

@pytest.mark.parametrize("score", ["location", "patch"])
@pytest.mark.parametrize("sampling", ["rolled", "authors"])
@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_conv_train_batch_equals_numpy(be, rule, sampling, score):
    rng = np.random.default_rng(5)
    B, Gr, Gc, offsets = 4, 4, 3, (1, 2)
    ref = ConvClappStack.init([3, "M", 4], 2, rule, rng, offsets=offsets, dtype="float64", score=score,
                              sampling=sampling, pred_init_scale=2.0)
    kwargs = dict(offsets=offsets, score=score, sampling=sampling)
    net = ConvClappStack([3, "M", 4], 2, rule, {k: be.to(v) for k, v in ref.params.items()}, **kwargs)
    x = 3 * np.abs(rng.standard_normal((B, Gr, Gc, 6, 6, 2)))         # large enough that some gates close
    xb = be.to(x)
    opt_ref, opt = Adam(0.01), Adam(0.01)
    draws = np.random.default_rng(6)
    for step in range(2):
        pairs, weights = ref.pair_sets(B, Gr, Gc, draws, negatives=2, saccade_prob=0.5)
        assert isinstance(weights, np.ndarray)                      # draws stay numpy on every back end
        s_ref = ref.train_batch(x, opt_ref, pairs, weights)
        s = net.train_batch(xb, opt, pairs, weights)
        _floats(s.loss, s_ref.loss, f"step {step} losses")
        _floats(s.modulated, s_ref.modulated, f"step {step} modulated")
        assert 0 < min(s_ref.modulated) < 1                          # some gates on, some off
    for k, v in ref.params.items():
        be.same(net.params[k], v, k)
    _same_optimiser(be, opt, opt_ref, "Adam")
    for l, (f, f_ref) in enumerate(zip(net.features(xb, chunk=3), ref.features(x, chunk=3))):
        be.same(f, f_ref, f"features of layer {l + 1}")
    # one layer's every output: gates and scores per offset (and CLAPP's retrodiction pathway)
    pairs, weights = ref.pair_sets(B, Gr, Gc, draws, negatives=2, saccade_prob=0.5)
    if sampling == "authors":
        if rule == "clapp":                          # the prediction's pairs and the mirror pathway's own
            ref_pairs = dict(shifts=None, neg_index=pairs[0, 0], weights=weights[0, 0],
                             retro_pairs=(pairs[0, 1], weights[0, 1]))
            got_pairs = dict(shifts=None, neg_index=be.to(pairs[0, 0]), weights=be.to(weights[0, 0]),
                             retro_pairs=(be.to(pairs[0, 1]), be.to(weights[0, 1])))
        else:
            ref_pairs = dict(shifts=None, neg_index=pairs[0], weights=weights[0])
            got_pairs = dict(shifts=None, neg_index=be.to(pairs[0]), weights=be.to(weights[0]))
    else:
        ref_pairs = dict(shifts=pairs, weights=weights)
        got_pairs = dict(shifts=pairs, weights=be.to(weights))
    p = ref.params
    g_ref = conv_clapp_layer(p["1/W"], p["1/W_pred"], x, offsets, W_retro=p.get("1/W_retro"), score=score, pool=True,
                             **ref_pairs)
    g = conv_clapp_layer(*(net.params[k] for k in ("1/W", "1/W_pred")), xb, offsets,
                         W_retro=net.params.get("1/W_retro"), score=score, pool=True, **got_pairs)
    for field, value in g_ref._asdict().items():
        if value is None:
            assert getattr(g, field) is None, field
        elif isinstance(value, list):
            assert len(getattr(g, field)) == len(value)
            for kappa, (a, b) in enumerate(zip(getattr(g, field), value)):
                be.same(a, b, f"{field}[{kappa}]")
        else:
            be.same(getattr(g, field), value, field)


# ---------------------------------------------------------------------------------------------
# optimisers

def test_optimisers_keep_their_state_on_the_back_end(be):
    rng = np.random.default_rng(7)
    params = {"a/W": rng.standard_normal((3, 2)), "b/W": rng.standard_normal(4)}
    steps = [({"a/W": rng.standard_normal((3, 2))}, {"b/W": rng.standard_normal(4)}) for _ in range(4)]

    def make(name):
        return Adam(0.1) if name == "a" else SGD(0.2)

    ref, got = GroupedOptimizer(make), GroupedOptimizer(make)
    p_ref, p = {k: v.copy() for k, v in params.items()}, {k: be.to(v) for k, v in params.items()}
    for ga, gb in steps[:2]:
        ref.step("a", p_ref, ga)
        ref.step("b", p_ref, gb)
        got.step("a", p, {k: be.to(v) for k, v in ga.items()})
        got.step("b", p, {k: be.to(v) for k, v in gb.items()})
    _same_optimiser(be, got, ref, "grouped")
    resumed = GroupedOptimizer(make)
    resumed.load_state_dict(got.state_dict())                       # a resumed run continues the same
    for ga, gb in steps[2:]:
        ref.step("a", p_ref, ga)
        ref.step("b", p_ref, gb)
        resumed.step("a", p, {k: be.to(v) for k, v in ga.items()})
        resumed.step("b", p, {k: be.to(v) for k, v in gb.items()})
    for k, v in p_ref.items():
        be.same(p[k], v, k)
    _same_optimiser(be, resumed, ref, "resumed")
