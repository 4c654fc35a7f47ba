"""Retinotopic (locally connected) layers: wiring, the per-location rule against finite differences and the dense
rule, the Brian2 rate network against the numpy reference, the spiking network against the rate rule, protocols."""
from pathlib import Path

import numpy as np
import pytest

import neuroplastic.engines.brian  # noqa: F401  (silences brian2's import warning)
from neuroplastic.cli import main as cli
from neuroplastic.engines.brian.device import Simulator, check_compiler
from neuroplastic.engines.brian.fidelity import compare_updates, rate_updates
from neuroplastic.engines.brian.network import build
from neuroplastic.engines.brian.spiking import build as build_spiking
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.stream import train_stream
from neuroplastic.errors import ProtocolError
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR, load
from neuroplastic.rules import clapp_pairs, clapp_sequences, init_dense_params
from neuroplastic.rules.retinotopic import Layout, init_layout_params, stack_layouts

b2 = pytest.importorskip("brian2")
ROOT = Path(__file__).resolve().parents[1]
PATCH, CHANNELS, KERNEL, STRIDE = 6, [3, 2], [3, 2], [1, 1]     # 6 x 6 -> 4 x 4 x 3 -> 3 x 3 x 2


def layouts():
    return stack_layouts(PATCH * PATCH, CHANNELS, "retinotopic", patch=PATCH, kernel=KERNEL, stride=STRIDE)


def test_wiring_is_the_receptive_fields():
    lay = Layout.retinotopic(grid_in=5, channels_in=2, kernel=3, stride=2, channels=4)
    assert (lay.grid, lay.locations, lay.n, lay.n_in, lay.fan_in) == (2, 4, 16, 50, 18)
    # neuron (location (1, 0), channel 3) sees rows 2-4, columns 0-2 of the 5 x 5 sheet, both channels
    neuron = (1 * 2 + 0) * 4 + 3
    seen = lay.ff_mask[neuron].reshape(5, 5, 2)
    expect = np.zeros((5, 5, 2), bool)
    expect[2:5, 0:3] = True
    assert np.array_equal(seen, expect)
    # prediction within a location only; the location index is location-major
    assert np.array_equal(lay.location, np.repeat(np.arange(4), 4))
    assert lay.pred_mask.sum() == 4 * 4 * 4 and lay.pred_mask[0, 4] == 0 and lay.pred_mask[5, 6]
    post, pre = lay.connections("W")
    assert len(post) == lay.ff_mask.sum() and np.all(lay.ff_mask[post, pre]) and np.all(np.diff(pre) >= 0)
    # the dense layout's synapses come in the order the dense builders always used (pre-major)
    post, pre = Layout.dense(3, 2).connections("W")
    assert post.tolist() == [0, 1, 0, 1, 0, 1] and pre.tolist() == [0, 0, 1, 1, 2, 2]


def test_kernels_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match="layer 2: kernel 5 does not fit the 4 x 4 locations"):
        stack_layouts(36, [3, 2], "retinotopic", patch=6, kernel=[3, 5])
    with pytest.raises(ValueError, match="kernel has 3 values for 2 layers"):
        stack_layouts(36, [3, 2], "retinotopic", patch=6, kernel=[3, 2, 1])


def test_init_is_zero_off_the_connections_and_scaled_by_fan_in():
    lays = layouts()
    p = init_layout_params(lays, True, np.random.default_rng(0), dtype="float64")
    for l, lay in enumerate(lays, start=1):
        assert not p[f"{l}/W"][~lay.ff_mask].any() and not p[f"{l}/W_pred"][~lay.pred_mask].any()
        assert not p[f"{l}/W_retro"][~lay.pred_mask].any()
    big = Layout.retinotopic(12, 1, 5, 1, 30)
    W = init_layout_params([big], False, np.random.default_rng(1), dtype="float64")["1/W"]
    assert abs(W[big.ff_mask].std() - np.sqrt(2 / 25)) < 0.01
    # dense layouts draw exactly the dense initialisation
    dense = init_layout_params([Layout.dense(8, 5), Layout.dense(5, 4)], True, np.random.default_rng(2))
    ref = init_dense_params([8, 5, 4], True, np.random.default_rng(2))
    assert all(np.array_equal(dense[k], ref[k]) for k in ref)


def test_masks_are_converted_once_per_kind_of_array():
    lay = layouts()[0]
    W64, W32 = np.zeros((lay.n, lay.n_in)), np.zeros((lay.n, lay.n_in), np.float32)
    ff, pred = lay.masks_like(W64)
    assert ff.dtype == np.float64 and np.array_equal(ff, lay.ff_mask) and np.array_equal(pred, lay.pred_mask)
    assert lay.masks_like(np.ones_like(W64))[0] is ff             # kept, not converted again
    assert lay.masks_like(W32)[0].dtype == np.float32 and lay.masks_like(W32)[0] is not ff


def _pair_problem(rule, seed=0):
    rng = np.random.default_rng(seed)
    lay = layouts()[0]
    p = init_layout_params([lay], rule == "clapp", rng, dtype="float64", pred_init_scale=3.0)
    x, x_prev = rng.random((6, lay.n_in)), rng.random((6, lay.n_in))
    y = np.array([1, -1, 1, -1, 1, -1.0])
    return lay, p, x, x_prev, y


def test_per_location_rule_is_the_gradient_of_the_summed_hinge():
    """CLAPP-s: every connected weight's gradient against central finite differences of the summed loss."""
    lay, p, x, x_prev, y = _pair_problem("clapp_s")
    g = clapp_pairs(p["1/W"], p["1/W_pred"], x, x_prev, y, layout=lay)
    assert g.u.shape == (6, lay.locations) and 0 < np.mean(g.gamma != 0) < 1   # both gate states occur

    def loss(W, W_pred):
        return float(clapp_pairs(W, W_pred, x, x_prev, y, layout=lay).loss)

    for key, grad, mask in (("W", g.W, lay.ff_mask), ("W_pred", g.W_pred, lay.pred_mask)):
        assert not grad[~mask].any()
        rows, cols = np.nonzero(mask)
        pick = np.random.default_rng(1).choice(len(rows), 60, replace=False)
        for i, j in zip(rows[pick], cols[pick]):
            args = {"W": p["1/W"].copy(), "W_pred": p["1/W_pred"].copy()}
            args[key][i, j] += 1e-6
            up = loss(**args)
            args[key][i, j] -= 2e-6
            fd = (up - loss(**args)) / 2e-6
            assert abs(fd - grad[i, j]) < 1e-7, (key, i, j, fd, grad[i, j])


def test_per_location_rule_is_the_dense_rule_of_each_location():
    """A location's neurons learn exactly as a dense layer of their own on their receptive field."""
    for rule in ("clapp_s", "clapp"):
        lay, p, x, x_prev, y = _pair_problem(rule, seed=3)
        g = clapp_pairs(p["1/W"], p["1/W_pred"], x, x_prev, y, W_retro=p.get("1/W_retro"), layout=lay)
        m = lay.n // lay.locations
        for loc in range(lay.locations):
            rows = slice(loc * m, (loc + 1) * m)
            seen = lay.ff_mask[loc * m]
            sub = clapp_pairs(p["1/W"][rows][:, seen], p["1/W_pred"][rows, rows], x[:, seen], x_prev[:, seen], y,
                              W_retro=None if rule == "clapp_s" else p["1/W_retro"][rows, rows],
                              weights=np.full(6, 1 / 6))
            np.testing.assert_allclose(g.u[:, loc], sub.u, atol=1e-13)
            np.testing.assert_allclose(g.W[rows][:, seen], sub.W, atol=1e-13)
            np.testing.assert_allclose(g.W_pred[rows, rows], sub.W_pred, atol=1e-13)
            if rule == "clapp":
                np.testing.assert_allclose(g.W_retro[rows, rows], sub.W_retro, atol=1e-13)
                np.testing.assert_allclose(g.u_retro[:, loc], sub.u_retro, atol=1e-13)


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_batched_rule_sums_the_pairs(rule):
    """clapp_sequences with a layout equals clapp_pairs summed over its pair sets."""
    rng = np.random.default_rng(4)
    lay = layouts()[0]
    p = init_layout_params([lay], rule == "clapp", rng, dtype="float64", pred_init_scale=3.0)
    B, T, shifts = 4, 5, [0, 1, 3]
    x, weights = rng.random((B, T, lay.n_in)), rng.random((3, B, T - 1))
    g = clapp_sequences(p["1/W"], p["1/W_pred"], x, shifts, weights, W_retro=p.get("1/W_retro"), layout=lay)
    assert g.u.shape == (3, B, T - 1, lay.locations)
    total = {k: 0.0 for k in ("W", "W_pred", "W_retro", "loss")}
    for s, shift in enumerate(shifts):
        cur, prev = np.roll(x[:, 1:], shift, axis=0).reshape(-1, lay.n_in), x[:, :-1].reshape(-1, lay.n_in)
        y = np.full(len(cur), 1.0 if shift == 0 else -1.0)
        r = clapp_pairs(p["1/W"], p["1/W_pred"], cur, prev, y, W_retro=p.get("1/W_retro"),
                        weights=weights[s].reshape(-1), layout=lay)
        for k in ("W", "W_pred") + (("W_retro",) if rule == "clapp" else ()):
            total[k] = total[k] + getattr(r, k)
        total["loss"] += r.loss
    assert abs(total["loss"] - g.loss) < 1e-12
    for k in ("W", "W_pred") + (("W_retro",) if rule == "clapp" else ()):
        np.testing.assert_allclose(getattr(g, k), total[k], atol=1e-13)


def _stream(rule, T=150, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    lays = layouts()
    params = init_layout_params(lays, rule == "clapp", rng, dtype="float64", pred_init_scale=3.0)
    for l, lay in enumerate(lays, start=1):
        params[f"{l}/W"] = params[f"{l}/W"] + offset / lay.fan_in * lay.ff_mask
    x = rng.random((T, PATCH * PATCH))
    y = np.where(rng.random(T) < 0.5, -1.0, 1.0)
    y[0] = 0.0
    return lays, params, x, y


def _models():
    return load_model(MODELS_DIR / "two_compartment.toml"), load_model(MODELS_DIR / "clapp_synapses.toml")


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_brian_rate_network_equals_the_numpy_reference(rule):
    """Glimpse by glimpse: per-location scores, and every connected weight after 150 online updates."""
    lays, params, x, y = _stream(rule)
    sizes = [PATCH * PATCH, *[lay.n for lay in lays]]
    ref = ClappStack(sizes, rule, {k: v.copy() for k, v in params.items()}, lays)
    out = train_stream(ref, x, y, 0.05)
    gamma = out["gamma"][0][1:]
    assert np.sum(gamma == 0) > 10 and np.sum(gamma != 0) > 10    # both gate states occur
    neuron, synapses = _models()
    net = Simulator("runtime", {}).run(
        lambda x, y, p, eta: build(neuron, synapses, sizes, rule == "clapp", x, y, p, eta, 50 * b2.ms, layouts=lays),
        x, y, params, 0.05)
    assert [len(net.synapses[f"{l}/W"]) for l in (1, 2)] == [int(lay.ff_mask.sum()) for lay in lays]
    assert [m.N for m in net.modulators] == [lay.locations for lay in lays]
    learned = net.weights()
    for key, w in ref.params.items():
        scale = np.abs(w).max()
        assert np.abs(w - params[key]).max() > 0.02 * scale, f"{key} did not learn: the test would be vacuous"
        assert np.abs(learned[key] - w).max() < 1e-6 * scale, key
    for l, mon in enumerate(net.monitors["modulation"]):
        np.testing.assert_allclose(np.asarray(mon.u[:]).T[1:], out["u"][l][1:], atol=1e-9)
        if rule == "clapp":
            np.testing.assert_allclose(np.asarray(mon.u_retro[:]).T[1:], out["u_retro"][l][1:], atol=1e-9)


def test_spiking_network_is_wired_by_location_and_reads_scores_per_location():
    """Runtime, short glimpses: structure, one modulator per location, and scores placed by glimpse and location."""
    lays, params, x, y = _stream("clapp_s", T=6, offset=0.8)
    sizes = [PATCH * PATCH, *[lay.n for lay in lays]]
    neuron, synapses = _models()
    b2.seed(1)
    net = Simulator("runtime", {}).run(
        lambda x, y, p, eta: build_spiking(neuron, synapses, sizes, False, x, y, p, eta, 10 * b2.ms, dt=0.5 * b2.ms,
                                           layouts=lays), x, y, params, 0.0)
    assert [len(net.synapses[f"{l}/W_pred"]) for l in (1, 2)] == [int(lay.pred_mask.sum()) for lay in lays]
    u = net.scores()
    assert [v.shape for v in u] == [(6, lay.locations) for lay in lays]
    mon = net.monitors["modulation"][0]
    last = np.asarray(mon.t_[:]) > 5 * 0.01
    np.testing.assert_array_equal(np.asarray(mon.u[:])[last][np.argsort(np.asarray(mon.i[:])[last])], u[0][5])
    assert np.abs(u[0]).max() > 0


@pytest.mark.slow
def test_cpp_spiking_updates_follow_the_per_location_rate_rule(tmp_path, monkeypatch):
    """Frozen weights, long glimpses: the spiking summed ΔW correlates with the rate rule's per-location one."""
    check_compiler()
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    lays, params, x, y = _stream("clapp_s", T=150, offset=0.8)
    sizes = [PATCH * PATCH, *[lay.n for lay in lays]]
    neuron, synapses = _models()
    eta = 1e-7

    def make(x, y, p, eta):
        b2.seed(1)
        return build_spiking(neuron, synapses, sizes, False, x, y, p, eta, 300 * b2.ms, dt=0.1 * b2.ms, layouts=lays)

    sim = Simulator("cpp", {"test": "retinotopic spiking"})
    net = sim.run(make, x, y, params, eta)
    after, u = net.weights(), net.scores()
    sim.release(net)
    rate = rate_updates(params, x, y, lays)
    spiking = ({k: (after[k] - params[k]) / eta for k in rate[0]}, u)
    measures = compare_updates(rate, spiking, y, lays)
    print(measures)
    for l in ("1", "2"):
        assert measures["dw_correlation"][l] >= 0.8, measures
        assert measures["gate_agreement"][l] >= 0.8, measures


def test_protocol_checks_name_the_key(tmp_path, capsys):
    base = ROOT / "protocols" / "clapp_natural_images.toml"
    with pytest.raises(ProtocolError, match=r"\[model\] kernel = \[3\]: layer 2: kernel 3 does not fit the 2 x 2"):
        load(base, ['model.connectivity="retinotopic"', "model.kernel=[3]", "model.layers=[4, 4]"])
    with pytest.raises(ProtocolError, match=r"\[model\] kernel = \[2\]: read only by retinotopic layers"):
        load(base, ["model.kernel=[2]"])
    with pytest.raises(ProtocolError, match=r"\[model\] arch = .*allowed with it: 'dense'"):
        load(ROOT / "protocols" / "clapp_conv_quick.toml", ['model.connectivity="retinotopic"'])
    # found with the data, before a run directory exists
    rc = cli(["run", str(ROOT / "protocols" / "clapp_speech_quick.toml"), "--out", str(tmp_path), "--quiet",
              "--set", 'model.connectivity="retinotopic"', "--set", "model.kernel=[1]", "--set", "model.layers=[4]",
              "--set", "evaluate.layers=[1]"])
    assert rc == 2 and not list(tmp_path.iterdir())
    assert "[model] connectivity = 'retinotopic'" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["numpy", "brian"])
def test_retinotopic_protocol_runs_on_both_engines(engine, tmp_path, capsys):
    """The numpy engine (batches, Adam) and the Brian2 rate network (online) train and keep the wiring."""
    sets = ["--set", "stimulus.patch=8", "--set", 'model.connectivity="retinotopic"', "--set", "model.kernel=[4, 2]",
            "--set", "model.stride=[2, 1]", "--set", "model.layers=[4, 6]", "--set", "train.epochs=1",
            "--set", "data.max_samples=40"]
    name = "clapp_natural_images"
    if engine == "brian":
        name += "_spiking"
        sets += ["--set", 'engine.variant="rate"', "--device", "runtime", "--set", "stimulus.glimpse_ms=10"]
    rc = cli(["run", str(ROOT / "protocols" / f"{name}.toml"), "--out", str(tmp_path), "--quiet", *sets])
    assert rc == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    checkpoints = sorted((run / "checkpoints").glob("epoch_*.npz"))
    assert len(checkpoints) == 2
    with np.load(checkpoints[0]) as start, np.load(checkpoints[-1]) as end:
        lays = stack_layouts(64, [4, 6], "retinotopic", patch=8, kernel=[4, 2], stride=[2, 1])
        for l, lay in enumerate(lays, start=1):
            W, W0 = end[f"param/{l}/W"], start[f"param/{l}/W"]
            assert not W[~lay.ff_mask].any() and np.abs(W - W0)[lay.ff_mask].max() > 0
            assert not end[f"param/{l}/W_pred"][~lay.pred_mask].any()


def test_one_location_that_sees_part_of_the_input_scores_as_a_dense_layer():
    """A sheet of one location (kernel 3, stride 3 on 5 x 5): one score per row, as every engine reads it, and
    gradients zero off the 3 x 3 receptive field."""
    lay = Layout.retinotopic(5, 1, 3, 3, 4)
    assert (lay.locations, lay.is_dense, lay.fan_in) == (1, False, 9)
    rng = np.random.default_rng(5)
    p = init_layout_params([lay], False, rng, dtype="float64", pred_init_scale=3.0)
    x, x_prev, y = rng.random((6, 25)), rng.random((6, 25)), np.array([1, -1, 1, -1, 1, -1.0])
    g = clapp_pairs(p["1/W"], p["1/W_pred"], x, x_prev, y, layout=lay)
    assert g.u.shape == g.gamma.shape == (6,)
    assert not g.W[~lay.ff_mask].any() and g.W[lay.ff_mask].any()
