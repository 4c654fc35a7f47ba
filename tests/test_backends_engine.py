"""The rate engine on another array library: [engine] array and device, whole runs on torch, checkpoints.

The rules' updates on torch are checked against numpy one step at a time in ``test_backends_clapp.py``
and ``test_backends_hinge.py``; here whole runs go through the engine: the weights are drawn in
numpy and moved, each batch is moved as it is cut, and checkpoints, metrics and the probe get numpy.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import neuroplastic as npl
from neuroplastic.engines import get_engine
from neuroplastic.engines.base import train
from neuroplastic.engines.numpy.backend import backend
from neuroplastic.errors import ProtocolError
from neuroplastic.protocol import load
from neuroplastic.results import Run

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
TINY = ["data.max_samples=300", "model.layers=[16,16]", "train.batch_size=32", "train.epochs=3",
        'engine.dtype="float64"']


@pytest.mark.parametrize("settings,key,words", [
    (['engine.device="cuda"'], "[engine] device", "numpy arrays live in host memory"),
    (['engine.array="cupy"'], "[engine] device", "CuPy arrays live on a GPU"),
])
def test_an_array_library_on_a_device_it_cannot_use_is_refused_naming_the_key(settings, key, words):
    protocol = load(QUICKSTART, settings)
    with pytest.raises(ProtocolError, match=words) as info:
        backend(protocol, running=False)
    assert f"{key} = " in str(info.value) and str(QUICKSTART) in str(info.value)


def test_a_missing_array_library_is_refused_before_anything_is_written(tmp_path):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    protocol = load(QUICKSTART, ['engine.array="cupy"', 'engine.device="cuda"'])
    with pytest.raises(ProtocolError, match=r"\[engine\] array = 'cupy': cupy is not installed.*allowed: 'numpy'"):
        npl.run(protocol, out=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_torch_on_a_gpu_that_is_not_there_is_refused():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(ProtocolError, match=r"\[engine\] device = 'cuda': torch sees no CUDA GPU"):
        backend(load(QUICKSTART, ['engine.array="torch"', 'engine.device="cuda"']))


def test_the_default_back_end_keeps_every_earlier_run_name():
    plain = load(QUICKSTART)
    assert (plain.engine.array, plain.engine.device) == ("numpy", "cpu")
    assert "array" not in plain.identity()["protocol"]["engine"]
    assert "device" not in plain.identity()["protocol"]["engine"]
    assert load(QUICKSTART, ['engine.array="torch"']).digest() != plain.digest()


def _train(tmp_path, protocol):
    run = Run.open(tmp_path, protocol)
    summary = train(get_engine("numpy"), protocol, run, progress=False)
    run.finish(summary)
    return run.directory, summary


def _last_checkpoint(directory: Path) -> dict:
    newest = sorted((directory / "checkpoints").glob("epoch_*.npz"))[-1]
    with np.load(newest) as data:
        return {k: data[k] for k in data.files if k != "__state__"}


@pytest.mark.torch
@pytest.mark.parametrize("settings", [
    [],                                                                    # dense CLAPP-s
    ['rule.name="clapp"'],                                                 # dense CLAPP (own W_retro)
    None,                                                                  # conv CLAPP-s
], ids=["clapp_s", "clapp", "conv_clapp_s"])
def test_a_torch_run_equals_the_numpy_run_in_float64(tmp_path, settings):
    pytest.importorskip("torch")
    if settings is None:
        base = load(ROOT / "protocols" / "clapp_s_conv_quick.toml",
                    ["data.max_samples=64", "train.epochs=2", 'engine.dtype="float64"'])
    else:
        base = load(QUICKSTART, TINY + settings)
    numpy_dir, numpy_summary = _train(tmp_path / "numpy", base)
    torch_dir, torch_summary = _train(tmp_path / "torch", base.with_overrides(['engine.array="torch"']))
    a, b = _last_checkpoint(numpy_dir), _last_checkpoint(torch_dir)
    assert sorted(a) == sorted(b) and any(k.startswith("opt/") for k in a)
    for key in a:                         # checkpoints hold numpy arrays of the same dtype, equal to rounding
        assert b[key].dtype == a[key].dtype, key
        scale = max(float(np.max(np.abs(a[key]))), 1e-300)
        assert float(np.max(np.abs(a[key] - b[key]))) <= 1e-10 * scale, key
    for l, acc in numpy_summary["probe"].items():
        assert torch_summary["probe"][l] == pytest.approx(acc, abs=1e-9)
        assert torch_summary["probe_random"][l] == numpy_summary["probe_random"][l]


@pytest.mark.torch
def test_a_torch_run_resumed_from_a_checkpoint_is_bit_identical(tmp_path):
    pytest.importorskip("torch")
    protocol = load(QUICKSTART, TINY + ['engine.array="torch"'])
    whole, _ = _train(tmp_path / "whole", protocol)
    cut = tmp_path / "cut" / whole.name
    shutil.copytree(whole, cut)
    (cut / "checkpoints" / "epoch_0003.npz").unlink()
    for name in ("metrics.csv", "summary.json"):
        (cut / name).unlink()
    manifest = json.loads((cut / "manifest.json").read_text())
    manifest.update(status="running")
    (cut / "manifest.json").write_text(json.dumps(manifest))
    resumed = Run.open(tmp_path / "cut", protocol, resume=True)
    assert resumed.latest_checkpoint()[0] == 2
    resumed.finish(train(get_engine("numpy"), protocol, resumed, progress=False))
    a, b = _last_checkpoint(whole), _last_checkpoint(resumed.directory)
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.slow
@pytest.mark.torch
def test_the_quickstart_on_torch_gives_the_numpy_probe_table_to_the_third_digit(tmp_path):
    """The shipped quickstart (60 epochs) in float64: the two back ends' probe tables agree to the third digit.

    In float32 they differ by rounding, which 60 epochs of Adam amplify to one test digit of 899 at
    layer 2 (0.9187 vs 0.9198): as much as float32 and float64 differ on numpy itself (0.9098 vs 0.9087).
    """
    pytest.importorskip("torch")
    tables = []
    for array in ("numpy", "torch"):
        result = npl.run(load(QUICKSTART, [f'engine.array="{array}"', 'engine.dtype="float64"']))
        tables.append({l: (round(result.probe[l], 3), round(result.probe_random[l], 3)) for l in result.probe})
    assert tables[0] == tables[1]
    assert tables[0][2][0] > tables[0][2][1]                  # and the run learned: trained beats random at layer 2


def test_host_floats_reads_a_batchs_scalars_in_one_transfer(monkeypatch):
    from neuroplastic.engines.numpy import backend as module

    values = [np.float32(0.25), np.asarray(1.5), 3.0]
    assert module.host_floats(values) == [0.25, 1.5, 3.0] and module.host_floats([2, 0.5]) == [2.0, 0.5]
    moved = []
    monkeypatch.setattr(module, "to_device", lambda x, where: moved.append(x.shape) or np.asarray(x))
    module.host_floats([np.asarray(0.1), np.asarray(0.2), np.asarray(0.3)])
    assert moved == [(3,)]                                       # one stacked transfer, not one per value


@pytest.mark.torch
def test_host_floats_reads_torch_scalars():
    torch = pytest.importorskip("torch")
    from neuroplastic.engines.numpy.backend import host_floats

    assert host_floats([torch.tensor(0.5), torch.tensor(2.0, dtype=torch.float64), 1.0]) == [0.5, 2.0, 1.0]
