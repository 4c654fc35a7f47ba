"""A stream run in successive chunks of one network equals one run of the whole stream (rate and spiking).

This is what lets a compiled network take streams of any length in bounded memory: each chunk is a run of the
same binary, starting from the state the previous chunk ended in (``net.carry()``), including the context spikes
still on their way to the dendrites. The spiking check uses deterministic thresholds, so that the two ways of
running give the very same spikes.
"""
from pathlib import Path

import numpy as np
import pytest

import neuroplastic.engines.brian  # noqa: F401  (silences brian2's import warning)
from neuroplastic.engines.brian.device import Simulator
from neuroplastic.engines.brian.network import build
from neuroplastic.engines.brian.spiking import build as build_spiking
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR
from helpers import random_problem

b2 = pytest.importorskip("brian2")


def run_chunked(make, x, y, params, eta, chunk, drop_replay=False):
    """Run ``x``/``y`` in chunks of ``chunk`` glimpses; return the last network and every chunk's scores."""
    sim, carry, weights, scores = Simulator("runtime", {}), None, dict(params), []
    for start in range(0, len(y), chunk):
        net = sim.run(make, x[start:start + chunk], y[start:start + chunk], weights, eta, carry=carry)
        weights, carry = net.weights(), net.carry()
        if drop_replay:
            carry = {k: v for k, v in carry.items() if not k.startswith("replay")}
        scores.append(_scores(net))
    return weights, [np.concatenate(s) for s in zip(*scores)]


def _scores(net):
    if "counts" in net.monitors:                          # spiking
        return net.scores()
    return [np.asarray(m.u[0]) for m in net.monitors["modulation"]]


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_rate_network_in_chunks_equals_one_run(rule):
    sizes, T = [10, 8, 6], 60
    params, x, y = random_problem(sizes, T, rule, seed=3)
    neuron, synapses = load_model(MODELS_DIR / "two_compartment.toml"), load_model(MODELS_DIR / "clapp_synapses.toml")
    make = lambda x, y, p, eta: build(neuron, synapses, sizes, rule == "clapp", x, y, p, eta, 50 * b2.ms)  # noqa: E731
    whole = Simulator("runtime", {}).run(make, x, y, params, 0.05)
    weights, scores = run_chunked(make, x, y, params, 0.05, chunk=20)
    for key, w in whole.weights().items():
        assert np.abs(w - params[key]).max() > 1e-3, f"{key} did not learn: the test would be vacuous"
        np.testing.assert_allclose(weights[key], w, rtol=0, atol=1e-12)
    for u, u_whole in zip(scores, _scores(whole)):
        np.testing.assert_allclose(u, u_whole, rtol=0, atol=1e-12)


def deterministic_neuron(tmp_path: Path) -> Path:
    """The shipped spiking neuron with deterministic thresholds: spikes on a fixed lattice of time steps.

    The lattice's period (6 steps) divides a chunk's steps, so that it is the same in every chunk.
    """
    text = (MODELS_DIR / "two_compartment.toml").read_text()
    text = text.replace('threshold = "rand() < x_rate * x * dt"',
                        'threshold = "x > 0.3 and (timestep(t, dt) + i) % 3 == 0"')
    text = text.replace('threshold = "rand() < rate_out * v * dt * int((timestep(t, dt) + 1) % steps_per_glimpse != 0)"',
                        'threshold = "v > 0.05 and (timestep(t, dt) + i) % 2 == 0 and '
                        '(timestep(t, dt) + 1) % steps_per_glimpse != 0"')
    assert "rand()" not in text
    path = tmp_path / "deterministic.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_spiking_network_in_chunks_equals_one_run(rule, tmp_path):
    sizes, T = [10, 8, 6], 12
    params, x, y = random_problem(sizes, T, rule, seed=4, offset=0.8)
    neuron = load_model(deterministic_neuron(tmp_path))
    synapses = load_model(MODELS_DIR / "clapp_synapses.toml")

    def make(x, y, p, eta):
        return build_spiking(neuron, synapses, sizes, rule == "clapp", x, y, p, eta, 10 * b2.ms, dt=0.5 * b2.ms)

    whole = Simulator("runtime", {}).run(make, x, y, params, 0.02)
    raster = whole.spikes()
    assert len(raster) == 2 * (len(sizes) - 1) and all(len(t) > 50 for k, t in raster.items() if k.endswith("/t_s"))
    weights, scores = run_chunked(make, x, y, params, 0.02, chunk=3)
    for key, w in whole.weights().items():
        assert np.abs(w - params[key]).max() > 1e-4, f"{key} did not learn: the test would be vacuous"
        np.testing.assert_allclose(weights[key], w, rtol=0, atol=1e-12)
    for u, u_whole in zip(scores, whole.scores()):
        np.testing.assert_allclose(u, u_whole, rtol=0, atol=1e-12)
    # Not vacuous: without the replayed context spikes, each chunk's first glimpse has an empty dendrite.
    _, lost = run_chunked(make, x, y, params, 0.02, chunk=3, drop_replay=True)
    assert not np.allclose(lost[0], whole.scores()[0])


ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(data__max_samples=30, train__epochs=2, model__layers=[6, 4], evaluate__folds=0, engine__device="runtime")


def test_protocol_in_chunks_trains_and_probes_as_one_run():
    """A rate protocol whose epochs and probe stream run in chunks of 50 glimpses gives the same run."""
    from neuroplastic.api import load_protocol, run

    results = {}
    for chunk in (0, 50):
        protocol = load_protocol(ROOT / "protocols" / "clapp_digits_brian.toml", **SMALL, engine__chunk_glimpses=chunk)
        results[chunk] = run(protocol)
    whole, chunked = results[0], results[50]
    n = len(whole.recordings["brian_monitors"]["y"])
    assert n > 50 * 2                                            # several chunks, the last one padded
    for key, w in whole.weights.items():
        np.testing.assert_allclose(chunked.weights[key], w, rtol=0, atol=1e-12)
    for key in ("layer1/u", "layer2/M"):
        np.testing.assert_allclose(chunked.recordings["brian_monitors"][key], whole.recordings["brian_monitors"][key],
                                   rtol=0, atol=1e-12)
    assert chunked.recordings["brian_monitors"]["layer1/z"].shape[1] == 50     # traces of the first chunk only
    assert chunked.summary["probe"] == whole.summary["probe"]
    assert [r for r in chunked.metrics if r["name"] == "loss"] == [r for r in whole.metrics if r["name"] == "loss"]


def test_spiking_protocol_in_chunks_keeps_the_stream_and_reads_every_probe_glimpse():
    from neuroplastic.api import load_protocol, run

    sets = {**SMALL, "train__epochs": 1, "stimulus__glimpse_ms": 10, "engine__dt_ms": 0.5,
            "engine__chunk_glimpses": 100, "evaluate__fidelity": False}
    result = run(load_protocol(ROOT / "protocols" / "clapp_digits_spiking.toml", **sets))
    mon = result.recordings["brian_monitors"]
    n = len(mon["y"])
    assert n > 100 and mon["layer1/u"].shape == (n,) and mon["layer2/z"].shape == (100, 4)
    assert np.all(mon["layer1/M"][mon["y"] == 0] == 0)
    assert result.features[1].shape[0] == 30 and np.all(np.isfinite(result.features[2]))
    assert result.features[1].std() > 0


@pytest.mark.slow
def test_one_build_serves_chunks_epochs_seeds_and_learning_rates(tmp_path, monkeypatch, capsys):
    """Compiled once: later runs with other seeds, learning rates and epochs recompile and relink nothing."""
    from neuroplastic.cli import main as cli
    from neuroplastic.engines.brian.device import check_compiler

    check_compiler()
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    sets = ["--set", "data.max_samples=30", "--set", "model.layers=[6, 4]", "--set", "evaluate.folds=0",
            "--set", "stimulus.glimpse_ms=10", "--set", "engine.dt_ms=0.5", "--set", "engine.chunk_glimpses=40"]
    built = None
    for k, (seed, lr, epochs) in enumerate([(1, 1e-2, 1), (2, 3e-3, 2), (3, 1e-3, 1)]):
        rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_spiking.toml"), "--out", str(tmp_path / "runs"),
                  "--quiet", "--seed", str(seed), "--set", f"rule.lr={lr}", "--set", f"train.epochs={epochs}", *sets])
        assert rc == 0, capsys.readouterr().err
        (build,) = [d for d in (tmp_path / "builds").iterdir() if (d / "main").is_file()]     # one build
        stamps = {p.name: p.stat().st_mtime_ns for p in [build / "main", *build.rglob("*.o")]}
        assert len(stamps) > 10
        if built is None:
            built = stamps
        assert stamps == built, f"run {k + 1} rebuilt {sorted(n for n in stamps if stamps[n] != built.get(n))}"
    assert len(list((tmp_path / "runs").iterdir())) == 3
    # Every chunk's run arguments (and Brian2's lock files for them) are deleted once read: nothing piles up.
    assert not [p.name for p in (build / "static_arrays").iterdir() if p.name.startswith("init_")]
    assert not list(build.glob("results_*"))
    # A stream is one run() of the network: each run call of a standalone project would generate (and compile)
    # its own copy of every code object, "<name>_codeobject_1.cpp", ...
    sources = [p.name for p in (build / "code_objects").glob("*.cpp")]
    assert sources and not [n for n in sources if "_codeobject_" in n], "a code object was generated twice"
