"""The spiking CLAPP network: structure (runtime), learning vs the rate rule (cpp_standalone), and a protocol run."""
from pathlib import Path

import numpy as np
import pytest

import neuroplastic.engines.brian  # noqa: F401  (silences brian2's import warning)
from neuroplastic.engines.brian.device import Simulator, check_compiler, seed_from_environment
from neuroplastic.engines.brian.spiking import build, constants, warn_if_saturated
from neuroplastic.cli import main as cli
from neuroplastic.engines.prepare import prepare
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR, load
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.stream import train_stream
from helpers import random_problem

b2 = pytest.importorskip("brian2")
ROOT = Path(__file__).resolve().parents[1]
corr = lambda a, b: float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])  # noqa: E731


def problem(sizes, T, rule="clapp_s", seed=0):
    """Random glimpse stream and initial weights; W gets a positive offset so most units are active."""
    return random_problem(sizes, T, rule, seed, offset=0.8)


def maker(sizes, rule, glimpse_ms, dt_ms=0.2, seed=1):
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    synapses = load_model(MODELS_DIR / "clapp_synapses.toml")

    def make(x, y, p, eta):
        b2.seed(seed)
        return build(neuron, synapses, sizes, rule == "clapp", x, y, p, eta, glimpse_ms * b2.ms, dt=dt_ms * b2.ms)
    return make


def with_dendrite_monitor(make):
    """``make`` plus an EventMonitor of the layers' means ``vbar`` and ``dbar`` at every glimpse end (runtime only)."""
    def wrapped(x, y, p, eta):
        net = make(x, y, p, eta)
        net.monitors["dbar"] = [b2.EventMonitor(layer, "saccade", variables=["vbar", "dbar"], when="after_synapses")
                                for layer in net.layers]
        net.network.add(*net.monitors["dbar"])
        return net
    return wrapped


def test_runtime_spiking_network_structure():
    """Spikes happen; per-glimpse rates follow ReLU(W x); the dendrite predicts from the previous glimpse."""
    sizes, T, G = [12, 8], 30, 100.0
    params, x, y = problem(sizes, T)
    make = with_dendrite_monitor(maker(sizes, "clapp_s", G, dt_ms=0.1))
    net = Simulator("runtime", {}).run(make, x, y, params, 0.0)   # eta 0: W fixed
    raster = net.spikes()
    assert len(raster) == 2 and len(raster["layer1/t_s"]) > 100
    (z,) = net.rates()
    assert z.shape == (T, 8)
    expected = np.maximum(x @ params["1/W"].T, 0)
    # z is the soma's mean over the counted window (the last two thirds of 100 ms): the input spikes' Poisson
    # noise, plus what is left of the membrane transient after the settle window. Mean within 10 %, per-glimpse
    # correlation > 0.9.
    assert abs(z.mean() / expected.mean() - 1) < 0.1, (z.mean(), expected.mean())
    assert corr(z, expected) > 0.9
    (u,) = net.scores()
    assert u.shape == (T,)
    M = y * (1 - y * u > 0)
    learn = y != 0
    assert np.any(M[learn] != 0) and np.any(M[learn] == 0)    # both gate states occur
    # The dendrite is driven by the layer's own spikes one glimpse back: its mean over the counted window,
    # dbar, is W_pred zprev up to the edges of the window (tau_d = 5 ms of 80) and spike noise ...
    dbar = np.asarray(net.monitors["dbar"][0].dbar[:]).reshape(T, 8)
    d = z[:-1] @ params["1/W_pred"].T
    assert corr(dbar[1:], d) > 0.95, corr(dbar[1:], d)
    assert abs(np.sum(dbar[1:] * d) / np.sum(d * d) - 1) < 0.05          # slope of dbar on W_pred zprev
    np.testing.assert_allclose(dbar[0], 0, atol=1e-12)                 # nothing before the first glimpse
    # The readout of the score and the plasticity is the soma's mean over the same window, rectified: it
    # follows ReLU(W x) more closely than the spike count (no output Poisson noise) ...
    vbar = np.asarray(net.monitors["dbar"][0].vbar[:]).reshape(T, 8)
    readout = np.maximum(vbar, 0)
    assert corr(readout, expected) > max(0.95, corr(z, expected)), (corr(readout, expected), corr(z, expected))
    assert abs(readout.mean() / expected.mean() - 1) < 0.1
    # ... and the score is u = sum_j [vbar_j]_+ dbar_j, exactly.
    np.testing.assert_allclose(u, np.sum(readout * dbar, axis=1), atol=1e-9)
    # With eta = 0 the weights did not move.
    np.testing.assert_array_equal(net.weights()["1/W"], params["1/W"])


def test_runtime_spiking_clapp_has_its_own_retrodiction_score_and_gate():
    """CLAPP: u_retro = sum_i zprev_i (W_retro z)_i from the rate readouts, gate M_retro = y Theta(1 - y u_retro),
    and W_retro learns eta M_retro zprev z^T while W_pred learns eta M z zprev^T (weights nearly frozen)."""
    sizes, T, G, eta = [10, 8, 6], 40, 20.0, 1e-9
    params, x, y = problem(sizes, T, "clapp")
    net = Simulator("runtime", {}).run(with_dendrite_monitor(maker(sizes, "clapp", G, dt_ms=0.5)), x, y, params, eta)
    after = net.weights()
    gate = lambda u: y * (1 - y * u > 0)  # noqa: E731
    differ = []
    readouts = [np.maximum(np.asarray(m.vbar[:]).reshape(T, -1), 0) for m in net.monitors["dbar"]]   # z = [vbar]_+
    for l, (z, u, u_retro) in enumerate(zip(readouts, net.scores(), net.retro_scores()), start=1):
        zprev = np.concatenate([np.zeros_like(z[:1]), z[:-1]])
        np.testing.assert_allclose(u_retro, np.sum(zprev * (z @ params[f"{l}/W_retro"].T), axis=1),
                                   rtol=1e-5, atol=1e-9)
        dw_retro = (after[f"{l}/W_retro"] - params[f"{l}/W_retro"]) / eta
        expected = np.einsum("k,ki,kj->ij", gate(u_retro), zprev, z)
        np.testing.assert_allclose(dw_retro, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
        dw_pred = (after[f"{l}/W_pred"] - params[f"{l}/W_pred"]) / eta
        np.testing.assert_allclose(dw_pred, np.einsum("k,ki,kj->ij", gate(u), z, zprev), rtol=0,
                                   atol=1e-4 * np.abs(dw_pred).max())
        # Not vacuous: where the two gates differ, M would have given W_retro another update.
        if np.any(gate(u) != gate(u_retro)):
            differ.append(l)
            other = np.einsum("k,ki,kj->ij", gate(u), zprev, z)
            assert np.abs(other - expected).max() > 0.01 * np.abs(expected).max()
    assert differ
    assert not np.allclose(params["1/W_retro"], params["1/W_pred"].T)      # W_retro starts independent


def test_noise_seed_replaces_the_spike_noise_per_run():
    """The same noise seed gives the same spikes, another seed other spikes (runtime; cpp: the slow test below)."""
    sizes, T, G = [6, 4], 4, 20.0
    params, x, y = problem(sizes, T)
    sim = Simulator("runtime", {})
    spikes = {}
    for key, seed in (("a", 11), ("a again", 11), ("b", 12)):
        net = sim.run(maker(sizes, "clapp_s", G, dt_ms=0.5), x, y, params, 0.0, noise_seed=seed)
        spikes[key] = net.spikes()["layer1/t_s"]
    assert len(spikes["a"]) > 10
    np.testing.assert_array_equal(spikes["a"], spikes["a again"])
    assert not np.array_equal(spikes["a"], spikes["b"])


@pytest.mark.slow
def test_cpp_binary_reads_its_noise_seed_from_the_environment(tmp_path, monkeypatch):
    """One compiled binary, fresh spike noise per run: NEUROPLASTIC_NOISE_SEED replaces the compiled seed."""
    check_compiler()
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    sizes, T, G = [6, 4], 4, 20.0
    params, x, y = problem(sizes, T)

    def make(x, y, p, eta):
        b2.seed(1)
        seed_from_environment()
        return build(load_model(MODELS_DIR / "two_compartment.toml"), load_model(MODELS_DIR / "clapp_synapses.toml"),
                     sizes, False, x, y, p, eta, G * b2.ms, dt=0.5 * b2.ms)

    sim = Simulator("cpp", {"test": "noise seed"})
    spikes = {}
    for key, seed in (("compiled", None), ("compiled again", None), ("a", 11), ("a again", 11), ("b", 12)):
        net = sim.run(make, x, y, params, 0.0, noise_seed=seed)
        spikes[key] = net.spikes()["layer1/t_s"].copy()
        sim.release(net)
    assert len(spikes["a"]) > 10
    np.testing.assert_array_equal(spikes["compiled"], spikes["compiled again"])
    np.testing.assert_array_equal(spikes["a"], spikes["a again"])
    assert not np.array_equal(spikes["a"], spikes["b"]) and not np.array_equal(spikes["a"], spikes["compiled"])


def test_the_settle_window_counts_only_spikes_after_it():
    """Saccadic suppression: z counts the spikes of the last (1 - settle) of each glimpse, and only those."""
    sizes, T, G, dt = [12, 8], 12, 50.0, 0.2
    params, x, y = problem(sizes, T)
    net = Simulator("runtime", {}).run(maker(sizes, "clapp_s", G, dt_ms=dt), x, y, params, 0.0)
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    settle = float(neuron.get("spiking.constants.settle"))
    rate_out = float(neuron.get("spiking.constants.rate_out").removesuffix("Hz"))
    assert 0 < settle < 1
    steps = round(G / dt)
    first = int(np.floor(settle * steps + 1e-9))       # the first time step that counts
    (z,), spikes = net.rates(), net.spikes()
    step = np.round(spikes["layer1/t_s"] / (dt * 1e-3)).astype(int)
    assert np.all(step % steps != steps - 1)           # the last step of a glimpse never spikes
    counted = step % steps >= first
    counts = np.zeros((T, 8))
    np.add.at(counts, (step[counted] // steps, spikes["layer1/i"][counted]), 1)
    # z = count / (rate_out * the time of the steps that can count: first .. steps - 2)
    np.testing.assert_allclose(z * rate_out * (steps - first - 1) * dt * 1e-3, counts, atol=1e-9)
    assert np.sum(~counted) > 0, "spikes happen inside the settle window too; they are just not counted"


def test_an_input_draw_that_saturates_is_named_with_its_file_line_and_a_step_that_fits(caplog):
    """rate_in * dt > 1: a Bernoulli draw per step cannot code x near 1; the warning says which dt_ms would."""
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    consts = constants(neuron)
    rate_in = float(consts["rate_in"])
    with caplog.at_level("WARNING", logger="neuroplastic.engines.brian.spiking"):
        assert warn_if_saturated(consts, 0.1 * b2.ms, neuron) == pytest.approx(rate_in * 1e-4)
        assert not caplog.records                                        # the shipped step fits
        assert warn_if_saturated(consts, 0.5 * b2.ms, neuron) == pytest.approx(rate_in * 5e-4)
    (record,) = caplog.records
    message = record.getMessage()
    assert "two_compartment.toml:" in message and "rate_in" in message and "dt_ms = 0.5" in message
    assert f"dt_ms <= {1e3 / rate_in:g}" in message


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_cpp_spiking_updates_correlate_with_rate_rule(rule, tmp_path, monkeypatch):
    """At long glimpses (300 ms) the spiking ΔW and ΔW_pred of every layer correlate >= 0.9 with the rate rule's.

    At the shipped step (0.1 ms): a soma spikes with probability rate_out [v]_+ dt per step, and a longer step
    saturates that draw for the larger potentials of this problem (at 0.2 ms, above v = 1.25)."""
    check_compiler()
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    sizes, T, G, eta = [16, 12, 8], 150, 300.0, 0.002
    params, x, y = problem(sizes, T, rule)
    sim = Simulator("cpp", {"test": "spiking", "rule": rule})
    net = sim.run(maker(sizes, rule, G, dt_ms=0.1), x, y, params, eta)
    learned = net.weights()
    sim.release(net)
    ref = ClappStack(sizes, rule, {k: v.copy() for k, v in params.items()})
    train_stream(ref, x, y, eta)
    for key in learned:
        c = corr(learned[key] - params[key], ref.params[key] - params[key])
        print(f"{rule} {key}: corr {c:.3f}")
        assert c >= 0.9, (key, c)


def test_spiking_protocol_runs_and_writes_spikes(tmp_path, capsys):
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_spiking.toml"), "--out", str(tmp_path), "--quiet",
              "--device", "runtime", "--set", "data.max_samples=30", "--set", "train.epochs=1",
              "--set", "model.layers=[6, 4]", "--set", "stimulus.glimpse_ms=10", "--set", "engine.dt_ms=0.5",
              "--set", "evaluate.folds=0"])
    assert rc == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    spikes = np.load(run / "brian_spikes.npz")
    assert len(spikes["layer1/i"]) > 0 and len(spikes["layer2/t_s"]) == len(spikes["layer2/i"])
    mon = np.load(run / "brian_monitors.npz")
    n = len(mon["y"])
    n_train = len(prepare(load(ROOT / "protocols" / "clapp_digits_spiking.toml",
                               ["data.max_samples=30", "evaluate.folds=0"]), running=False).train_idx)
    assert n == n_train * 9 and mon["layer2/z"].shape == (n, 4)  # the training digits' stream, not the probe's


def test_rate_and_spiking_variants_train_on_one_stream(tmp_path, capsys):
    """The same glimpses, saccades and order for both variants; no probe image in a stream that learns."""
    sets = ["--device", "runtime", "--set", "data.max_samples=30", "--set", "train.epochs=1",
            "--set", "model.layers=[6, 4]", "--set", "stimulus.glimpse_ms=10", "--set", "engine.dt_ms=0.5",
            "--set", "evaluate.folds=0"]
    streams = {}
    for variant in ("rate", "spiking"):
        out = tmp_path / variant
        rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_spiking.toml"), "--out", str(out), "--quiet",
                  "--set", f'engine.variant="{variant}"', *sets])
        assert rc == 0, capsys.readouterr().err
        (run,) = out.iterdir()
        streams[variant] = np.load(run / "brian_monitors.npz")
    rate, spiking = streams["rate"], streams["spiking"]
    for key in ("image", "position", "y"):
        assert np.array_equal(rate[key], spiking[key]), key
    prepared = prepare(load(ROOT / "protocols" / "clapp_digits_spiking.toml",
                            ["data.max_samples=30", "evaluate.folds=0"]), running=False)
    assert set(np.unique(rate["image"])) <= set(prepared.train_idx.tolist())
    assert not set(np.unique(rate["image"])) & set(prepared.test_idx.tolist())


def test_spiking_model_error_names_the_spiking_line(tmp_path, capsys):
    text = (MODELS_DIR / "clapp_synapses.toml").read_text()
    old = "el += counting_post / (x_rate_pre * (window - dt))"
    assert old in text
    lines = text.replace(old, "el += psi_unknown_post / (x_rate_pre * glimpse)", 1).split("\n")
    path = tmp_path / "clapp_synapses.toml"
    path.write_text("\n".join(lines))
    line = next(k for k, s in enumerate(lines, start=1) if "psi_unknown_post" in s)
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_spiking.toml"), "--out", str(tmp_path / "runs"),
              "--quiet", "--device", "runtime", "--set", "data.max_samples=20", "--set", "train.epochs=1",
              "--set", f'model.synapses="{path}"', "--set", "stimulus.glimpse_ms=2", "--set", "engine.dt_ms=0.5",
              "--set", "evaluate.folds=0"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{path}:{line}" in err and "Traceback" not in err, err
