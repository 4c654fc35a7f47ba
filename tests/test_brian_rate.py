"""The Brian2 rate network equals the numpy reference, glimpse by glimpse, on runtime and cpp_standalone."""
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import neuroplastic.engines.brian  # noqa: F401  (silences brian2's import warning)
from neuroplastic.engines.brian.device import DeviceError, Simulator, check_compiler
from neuroplastic.engines.brian.network import build
from neuroplastic.cli import main as cli
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.stream import train_stream
from helpers import random_problem

b2 = pytest.importorskip("brian2")
ROOT = Path(__file__).resolve().parents[1]
SIZES = [16, 12, 8]
T = 200
ETA = 0.05


def problem(rule, seed=0):
    return random_problem(SIZES, T, rule, seed)


def reference(rule, params, x, y, eta):
    net = ClappStack(SIZES, rule, {k: v.copy() for k, v in params.items()})
    out = train_stream(net, x, y, eta)
    return net.params, out


def maker(rule, neuron_file="two_compartment.toml", synapse_file="clapp_synapses.toml"):
    neuron = load_model(MODELS_DIR / neuron_file if isinstance(neuron_file, str) else neuron_file)
    synapses = load_model(MODELS_DIR / synapse_file if isinstance(synapse_file, str) else synapse_file)
    return lambda x, y, p, eta: build(neuron, synapses, SIZES, rule == "clapp", x, y, p, eta, 50 * b2.ms, record=2)


def assert_same_weights(brian, ref, initial):
    for key, w in ref.items():
        scale = np.abs(w).max()
        assert np.abs(w - initial[key]).max() > 0.05 * scale, f"{key} did not learn: the test would be vacuous"
        assert np.abs(brian[key] - w).max() < 1e-6 * scale, key


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_runtime_rate_network_equals_numpy_reference(rule):
    params, x, y = problem(rule)
    ref, out = reference(rule, params, x, y, ETA)
    assert (out["gamma"] != 0).sum() > 300 and (out["gamma"] == 0).sum() > 2 * 1   # both gate states occur
    sim = Simulator("runtime", {})
    net = sim.run(maker(rule), x, y, params, ETA)
    assert_same_weights(net.weights(), ref, params)
    for l, mon in enumerate(net.monitors["modulation"]):
        np.testing.assert_allclose(np.asarray(mon.u[0])[1:], out["u"][l][1:], atol=1e-9)
    if rule == "clapp":
        # True CLAPP: W_retro starts independent of W_pred^T and has its own score and gate, which differ
        # from the prediction pathway's on some glimpses (so the weights above check the separate gate).
        assert np.abs(params["1/W_retro"] - params["1/W_pred"].T).max() > 0.1
        for l, mon in enumerate(net.monitors["modulation"]):
            u, u_retro = np.asarray(mon.u[0])[1:], np.asarray(mon.u_retro[0])[1:]
            np.testing.assert_allclose(u_retro, out["u_retro"][l][1:], atol=1e-9)
            M_retro = y[1:] * (1 - y[1:] * u_retro > 0)
            np.testing.assert_array_equal(M_retro, out["gamma_retro"][l][1:])
            assert np.any(y[1:] * (1 - y[1:] * u > 0) != M_retro)
    else:
        assert "u_retro" not in net.modulators[0].variables
    # The dendrite predicts from the previous glimpse: traces recorded once per glimpse.
    assert net.monitors["traces"][0].z.shape == (2, T)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_cpp_standalone_equals_numpy_and_reruns_without_recompiling(rule, tmp_path, monkeypatch):
    check_compiler()
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    params, x, y = problem(rule)
    sim = Simulator("cpp", {"test": rule})
    net = sim.run(maker(rule), x, y, params, ETA)
    ref, _ = reference(rule, params, x, y, ETA)
    assert_same_weights(net.weights(), ref, params)
    sim.release(net)
    binary = sim.directory / "main"
    built = binary.stat().st_mtime_ns
    # A re-run with new stimulus, labels, weights and learning rate goes through run_args only.
    params2, x2, y2 = problem(rule, seed=1)
    net = sim.run(maker(rule), x2, y2, params2, 0.03)
    ref2, _ = reference(rule, params2, x2, y2, 0.03)
    assert_same_weights(net.weights(), ref2, params2)
    sim.release(net)
    assert binary.stat().st_mtime_ns == built
    assert not list(sim.directory.glob("results_*")), "results folders are removed after reading"
    with pytest.raises(DeviceError, match="streams of 200 glimpses"):
        sim.run(maker(rule), x2[:100], y2[:100], params2, 0.03)


def test_missing_compiler_suggests_runtime(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DeviceError, match="--device runtime"):
        check_compiler()


def run_brian(tmp_path, *settings):
    """``neuroplastic run`` of a tiny quickstart on the Brian2 engine (runtime device)."""
    return cli(["run", str(ROOT / "protocols" / "clapp_digits_brian.toml"), "--out", str(tmp_path / "runs"),
                "--quiet", "--device", "runtime", "--set", "data.max_samples=40", "--set", "train.epochs=1",
                *(a for s in settings for a in ("--set", s))])


def broken_copy(tmp_path, name, old, new):
    """A copy of a model file with one line changed; returns its path and the changed line's number."""
    text = (MODELS_DIR / name).read_text()
    assert old in text
    lines = text.replace(old, new, 1).split("\n")
    path = tmp_path / name
    path.write_text("\n".join(lines))
    return path, next(k for k, line in enumerate(lines, start=1) if new in line)


@pytest.mark.parametrize("name,key,old,new,expect", [
    ("two_compartment.toml", "model.file", "z = a * int(a > 0) : 1", "z = a * int(a > 0) : : 1",
     "cannot parse"),                                                                    # bad syntax
    ("two_compartment.toml", "model.file", "rho_prime = int(a > 0) : 1", "rho_prime = int(b_unknown > 0) : 1",
     "b_unknown"),                                                                       # unknown variable
    ("clapp_synapses.toml", "model.synapses", "d_post = w * zprev_pre : 1 (summed)",
     "d_post = w * zprev_pre : volt (summed)", "d_post"),                                # wrong units
    ("clapp_synapses.toml", "model.synapses", "w += eta_post * M_post * z_post * zprev_pre",
     "w += eta_post * M_post * z_post * zprev_pre * second", None),                    # inconsistent units
])
def test_malformed_model_file_names_file_and_line(tmp_path, capsys, name, key, old, new, expect):
    path, line = broken_copy(tmp_path, name, old, new)
    rc = run_brian(tmp_path, f'{key}="{path}"')
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{path}:{line}" in err and "Traceback" not in err, err
    if expect:
        assert expect in err, err


def test_brian_engine_runs_a_protocol_and_writes_monitors(tmp_path, capsys):
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_brian.toml"), "--out", str(tmp_path), "--quiet",
              "--device", "runtime", "--set", "data.max_samples=60", "--set", "train.epochs=2", "--set", "model.layers=[8, 8]"])
    assert rc == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    mon = np.load(run / "brian_monitors.npz")
    n = len(mon["y"])
    assert n % 9 == 0 and n >= 9 * 25            # training images x 9 glimpses per image
    assert mon["layer1/u"].shape == (n,)
    assert set(np.unique(mon["y"][1:])) == {-1.0, 1.0}
    assert mon["layer2/z"].shape == (4, n)
    np.testing.assert_array_equal(mon["layer1/M"] != 0, (1 - mon["y"] * mon["layer1/u"] > 0) & (mon["y"] != 0))


@pytest.mark.parametrize("setting,message", [
    ("rule.optimizer=adam", "[rule] optimizer = 'adam'"),
    ("engine.variant=spiking\0stimulus.glimpse_ms=50.05", "[stimulus] glimpse_ms = 50.05"),   # not k * dt
    ("rule.name=hinge_gll_bp\0stimulus.kind=views", "[rule] name = 'hinge_gll_bp': the Brian2 engine simulates"),
])
def test_brian_engine_rejects_what_it_cannot_run(tmp_path, capsys, setting, message):
    sets = [a for s in setting.split("\0") for a in ("--set", s)]
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_brian.toml"), "--out", str(tmp_path / "runs"), *sets])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    rc = cli(["validate", str(ROOT / "protocols" / "clapp_digits_brian.toml"), *sets])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_run_lock_keeps_builds_and_cleanups_away_from_running_binaries(tmp_path):
    """Binaries share the build; a rebuild or a run_args clean-up needs it alone."""
    from neuroplastic.engines.brian.device import _run_lock

    build = tmp_path / "abc"
    with _run_lock(build, shared=True) as a, _run_lock(build, shared=True) as b:
        assert a and b                                            # two binaries of one build run at once
        with _run_lock(build, shared=False, blocking=False) as alone:
            assert not alone                                      # no clean-up while they run
    with _run_lock(build, shared=False, blocking=False) as alone:
        assert alone


def test_a_waiting_build_is_not_starved_by_overlapping_runs(tmp_path):
    """Once a builder waits, new runs queue behind it, even while other runs still hold the build.

    Without that, the runs of two processes that overlap one another keep the shared lock taken without
    a gap and a third process waits to build until they have all finished.
    """
    import threading

    from neuroplastic.engines.brian.device import _build_lock, _run_lock

    build, order = tmp_path / "abc", []
    release_first, builder_waits = threading.Event(), threading.Event()

    def first_run():
        with _run_lock(build, shared=True):
            release_first.wait(10)

    def builder():
        builder_waits.set()
        with _build_lock(build):
            order.append("build")

    def second_run():
        with _run_lock(build, shared=True):
            order.append("second run")

    threads = [threading.Thread(target=first_run)]
    threads[0].start()
    time.sleep(0.2)                                               # the first run holds the build
    threads.append(threading.Thread(target=builder))
    threads[1].start()
    builder_waits.wait(10)
    time.sleep(0.2)                                               # the builder waits for the first run
    threads.append(threading.Thread(target=second_run))
    threads[2].start()
    threads[2].join(1.0)                                          # without the queue it would run now
    release_first.set()
    for t in threads:
        t.join(10)
    assert order == ["build", "second run"]
