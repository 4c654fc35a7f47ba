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
@pytest.mark.parametrize("protocol", ["clapp_digits_brian", "clapp_digits_spiking"])
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
