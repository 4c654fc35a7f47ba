"""The 'cuda' device: brian2cuda generates CUDA code and nvcc compiles it, with or without a GPU."""
from pathlib import Path

import pytest

import neuroplastic.engines.brian  # noqa: F401
from neuroplastic.engines.brian import device as dev
from neuroplastic.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.max_samples=40", "--set", "model.layers=[4, 4]", "--set", "train.epochs=1",
        "--set", "evaluate.folds=0"]


def test_cuda_without_gpu_fails_before_anything_is_built(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(dev, "gpu_available", lambda: False)
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_brian.toml"), "--device", "cuda",
              "--out", str(tmp_path / "runs"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no GPU found" in err and "--build-only" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "builds").exists()


def test_build_only_needs_a_standalone_brian_device(tmp_path, capsys):
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits.toml"), "--build-only"])
    assert rc == 2 and "needs [engine] name = \"brian\"" in capsys.readouterr().err
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_brian.toml"), "--build-only", "--device", "runtime"])
    assert rc == 2 and "nothing to build" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["clapp_digits_brian"])      # spiking: the large protocol's test below
def test_cuda_build_only_compiles_a_binary(monkeypatch, tmp_path, capsys, protocol):
    pytest.importorskip("brian2cuda")
    if dev.shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path))
    rc = cli(["run", str(ROOT / "protocols" / f"{protocol}.toml"), "--device", "cuda", "--build-only",
              "--cuda-arch", "8.0", *TINY])
    out = capsys.readouterr().out
    assert rc == 0, out
    binary = Path(out.split("built: ")[1].split(" (")[0])
    assert binary.is_file() and binary.parent.parent == tmp_path
    assert "-arch=sm_80" in (binary.parent / "makefile").read_text()
    if not dev.gpu_available():
        assert "no GPU found on this machine" in out


def synapses_built_for_cuda(protocol: str, monkeypatch, tmp_path, capsys) -> dict[str, int]:
    """Build a shipped protocol for CUDA (``--build-only``); return each synapse set's number of synapses."""
    pytest.importorskip("brian2cuda")
    if dev.shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path))
    rc = cli(["run", str(ROOT / "protocols" / f"{protocol}.toml"), "--device", "cuda", "--build-only",
              "--cuda-arch", "8.0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    binary = Path(out.split("built: ")[1].split(" (")[0])
    assert binary.is_file()
    # the synapses' presynaptic index arrays (int32), "_static_array__array_<synapses>_sources"
    return {p.name[:-len("_sources")].rsplit("_array_", 1)[1]: p.stat().st_size // 4
            for p in (binary.parent / "static_arrays").iterdir() if p.name.endswith("_sources")}


@pytest.mark.slow
def test_large_spiking_protocol_compiles_for_cuda_at_full_size(monkeypatch, tmp_path, capsys):
    """clapp_natural_images_spiking as shipped: 3 x 512 spiking neurons, 1.3 million plastic synapses.

    The spiking network's code does not depend on its size, so this is also the spiking variant's CUDA build.
    """
    n = synapses_built_for_cuda("clapp_natural_images_spiking", monkeypatch, tmp_path, capsys)
    # W 64 x 512 + 2 x 512 x 512 and W_pred 3 x 512 x 512
    plastic = sum(v for name, v in n.items() if not name.startswith("score"))
    assert plastic == 64 * 512 + 2 * 512 * 512 + 3 * 512 * 512 >= 10**6


@pytest.mark.slow
def test_retinotopic_spiking_protocol_compiles_for_cuda(monkeypatch, tmp_path, capsys):
    """clapp_natural_images_retinotopic_spiking as shipped: receptive-field wiring, one modulator per location and
    the broadcast of each location's score (a write to a postsynaptic variable) all build for CUDA."""
    n = synapses_built_for_cuda("clapp_natural_images_retinotopic_spiking", monkeypatch, tmp_path, capsys)
    # W: 576 x 16 + 512 x 256 + 256 x 512 receptive-field synapses; one broadcast synapse per neuron
    assert n["ff1"] + n["ff2"] + n["ff3"] == 271_360
    assert n["broadcast1"] + n["broadcast2"] == 576 + 512 and "broadcast3" not in n
