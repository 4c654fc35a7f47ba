"""The 'cuda' device: brian2cuda generates CUDA code and nvcc compiles it, with or without a GPU."""
import numpy as np
import pytest

import neuroplastic.brian  # noqa: F401
from neuroplastic.brian import device as dev
from neuroplastic.brian.device import DeviceError, Simulator
from neuroplastic.brian.network import build
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR
from neuroplastic.rate.network import ClappStack

b2 = pytest.importorskip("brian2")
SIZES = [16, 12, 8]


def problem(T=40):
    rng = np.random.default_rng(0)
    params = ClappStack.init(SIZES, "clapp_s", rng, dtype="float64").params
    y = np.where(rng.random(T) < 0.5, -1.0, 1.0)
    y[0] = 0
    return rng.random((T, SIZES[0])), y, params


def make(x, y, params, eta):
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    synapses = load_model(MODELS_DIR / "clapp_synapses.toml")
    return build(neuron, synapses, SIZES, False, x, y, params, eta, 50 * b2.ms)


def test_cuda_without_gpu_fails_before_compiling(monkeypatch, tmp_path):
    monkeypatch.setattr(dev, "gpu_available", lambda: False)
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path))
    sim = Simulator("cuda", {"test": "no-gpu"})
    x, y, params = problem()
    with pytest.raises(DeviceError, match="--build-only"):
        sim.run(make, x, y, params, 0.01)
    assert not any(tmp_path.iterdir()), "nothing is generated or compiled"


@pytest.mark.slow
def test_cuda_rate_network_compiles_to_a_binary(monkeypatch, tmp_path):
    pytest.importorskip("brian2cuda")
    if dev.shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path))
    sim = Simulator("cuda", {"test": "compile"}, cuda_arch=9.0)
    x, y, params = problem()
    directory = sim.build(make, x, y, params, 0.01)
    assert (directory / "main").is_file()
    assert "-arch=sm_90" in (directory / "makefile").read_text()
