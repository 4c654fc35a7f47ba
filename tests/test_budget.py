"""Settings too large for the machine, or absurd on any, are refused before a run directory exists.

A protocol's memory is estimated from shapes (neuroplastic.engines.budget) and compared with the
memory of the machine or ``[train] max_memory``; the refusal names the key that drives it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import set_args

from neuroplastic.cli import main
from neuroplastic.data import Dataset
from neuroplastic.engines.budget import available_memory, check_budget, estimate, format_bytes, machine_memory
from neuroplastic.engines.prepare import Prepared, prepare
from neuroplastic.errors import ProtocolError
from neuroplastic.protocol import load, loads
from neuroplastic.resources import find_protocol, protocols

DIGITS = find_protocol("clapp_digits")
TINY = ["data.max_samples=120", "train.epochs=1", "model.layers=[8,8]", "train.batch_size=16"]
BILLION = 1_000_000_000

#: (protocol, overrides, the key the refusal names): each would allocate far more than any machine has.
OVERSIZE = {
    "dense_layer_of_a_billion": ("clapp_digits", [f"model.layers=[{BILLION}]"], "[model] layers"),
    "two_wide_dense_layers": ("clapp_digits", ["model.layers=[100000, 100000]"], "[model] layers"),
    "clapp_s_billion_negatives": ("clapp_digits", [f"rule.negatives={BILLION}"], "[rule] negatives"),
    "conv_clapp_s_billion_negatives": ("clapp_s_conv_quick", [f"rule.negatives={BILLION}"], "[rule] negatives"),
    "hinge_dense_head_of_a_billion": ("tang_e2e_bp_quick", [f"rule.head={BILLION}"], "[rule] head"),
    "hinge_gll_head_of_a_billion": ("tang_gll_rf_quick", [f"rule.head={BILLION}"], "[rule] head"),
    "hinge_conv_head_of_a_billion": ("tang_e2e_bp_quick", ['model.arch="small"', f"rule.head={BILLION}"],
                                     "[rule] head"),
    "hinge_wide_layer": ("tang_dtp_quick", ["model.layers=[10000000]"], "[model] layers"),
    "brian_rate_wide_layers": ("clapp_digits_brian", ["model.layers=[100000, 100000]", 'engine.device="runtime"'],
                               "[model] layers"),
    "brian_spiking_wide_layers": ("clapp_digits_spiking", ["model.layers=[100000]", 'engine.device="runtime"'],
                                  "[model] layers"),
    # Absurd on any machine: refused by the schema's bounds.
    "epochs_10_to_the_12": ("clapp_digits", ["train.epochs=1000000000000"], "[train] epochs"),
    "two_thousand_layers": ("clapp_digits", [f"model.layers={[8] * 2000}"], "[model] layers"),
    "glimpse_of_1e12_ms": ("clapp_digits_spiking", ["stimulus.glimpse_ms=1e12", 'engine.device="runtime"'],
                           "[stimulus] glimpse_ms"),
    # Within the schema's bounds, but days of simulated time steps in all.
    "spiking_simulation_too_long": ("clapp_digits_spiking", ["stimulus.glimpse_ms=10000", "train.epochs=1000",
                                                             'engine.device="runtime"'], "[stimulus] glimpse_ms"),
}


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(OVERSIZE))
def test_an_oversize_protocol_is_refused_before_its_run_directory_exists(case, tmp_path, capsys):
    name, overrides, key = OVERSIZE[case]
    out = tmp_path / "runs"
    code, err = _run(["run", str(find_protocol(name)), "--out", str(out), "--quiet", *set_args(overrides)], capsys)
    assert code == 2, err
    assert key in err and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_a_refusal_says_what_is_needed_what_is_available_and_what_to_change(tmp_path, capsys):
    code, err = _run(["run", str(DIGITS), "--out", str(tmp_path), "--set", f"model.layers=[{BILLION}]"], capsys)
    assert code == 2
    assert f"[model] layers = [{BILLION}]: the parameters alone need" in err
    assert f"layer 1: {BILLION} x 16 W" in err and "Adam's 2 moments" in err
    assert "of memory of this machine" in err and "use fewer or narrower layers" in err


def test_refusing_an_oversize_protocol_takes_little_memory(tmp_path):
    """Run in a child of a child, so the peak of the grandchild alone is measured (RUSAGE_CHILDREN)."""
    measure = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(proc.stderr, file=sys.stderr)\n")
    cmd = [sys.executable, "-c", measure, sys.executable, "-m", "neuroplastic.cli", "run", str(DIGITS), "--out",
           str(tmp_path / "runs"), "--quiet", "--set", f"model.layers=[{BILLION}]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, proc.stdout.split())
    assert code == 2 and "[model] layers" in proc.stderr, proc.stderr
    assert peak_kib < 500 * 1024, f"refusing took {peak_kib / 1024:.0f} MiB"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fraction, says", [(0.999, "0 training"), (0.001, "0 test")])
def test_a_test_fraction_that_leaves_a_side_empty_is_refused_before_training(fraction, says, tmp_path, capsys):
    out = tmp_path / "runs"
    code, err = _run(["run", str(DIGITS), "--out", str(out), "--quiet", *set_args([*TINY, f"data.test_fraction={fraction}"])],
                     capsys)
    assert code == 2, err
    assert f"[data] test_fraction = {fraction:g}" in err and says in err and "of 120 in 10 classes" in err, err
    assert not out.exists()


def test_max_memory_lowers_the_bound(tmp_path, capsys):
    p = load(DIGITS, TINY)
    prepared = prepare(p)                       # fits this machine with the default (0: its memory)
    assert estimate(p, prepared).total < 2**30
    small = load(DIGITS, [*TINY, "train.max_memory=0.01"])
    with pytest.raises(ProtocolError, match=r"of \[train\] max_memory; .*or raise \[train\] max_memory"):
        check_budget(small, prepared)
    out = tmp_path / "runs"
    code, err = _run(["run", str(DIGITS), "--out", str(out), "--quiet", *set_args([*TINY, "train.max_memory=0.01"])],
                     capsys)
    assert code == 2 and "10.2 MiB of [train] max_memory" in err, err
    assert not out.exists()
    # a bound above the estimate lets it run (and is not part of the run's identity)
    assert check_budget(load(DIGITS, [*TINY, "train.max_memory=2"]), prepared).total < 2 * 2**30
    assert load(DIGITS, ["train.max_memory=2"]).digest() == load(DIGITS).digest()


@pytest.mark.parametrize("name", sorted(n for n in protocols() if "paper" not in n))
def test_every_shipped_protocol_with_built_in_data_fits_this_machine(name):
    p = load(protocols()[name])
    prepared = prepare(p, running=False)
    est = check_budget(p, prepared)                  # raises if it does not fit
    machine = machine_memory()
    assert machine is None or est.total < machine
    assert est.total < 2**30, est.describe()         # the quick protocols are small


def _shapes_only(n: int, shape: tuple, lazy: bool = False) -> Dataset:
    """A data set of ``n`` samples of ``shape`` that holds no memory (a broadcast zero).

    ``lazy``: the samples stand for a file read batch by batch (as the STL-10 loader reads its splits),
    which the estimate counts as holding nothing.
    """
    samples = np.broadcast_to(np.zeros((), np.float32), (n, *shape))
    if lazy:
        samples = _Lazy(samples.shape)
    return Dataset("shapes", samples, np.zeros(n, int), ("a",))


class _Lazy:
    """The shape and type of a lazily read array, and nothing else."""

    dtype = np.dtype(np.float32)

    def __init__(self, shape):
        self.shape = shape

    def __len__(self):
        return self.shape[0]


@pytest.mark.parametrize("name", sorted(n for n in protocols() if "paper" in n))
def test_the_paper_protocols_fit_a_workstation(name):
    """Estimated with the shapes of their data (STL-10, CIFAR), which need not be on disk.

    The authors' VGG6 on two views of 250 STL-10 crops (``tang_*_stl10_paper``) is the largest, about
    28 GiB (25 GiB of it the activations of one batch): a GPU-sized (or large-workstation) run; every
    other paper protocol fits 16 GiB.
    """
    p = load(protocols()[name])
    n, probe_n, side = (100_000, 13_000, 96) if p.data.source == "stl10" else (50_000, 60_000, 32)
    shape = (side, side, 3) if p.data.colour == "rgb" else (side, side)
    lazy = p.data.source == "stl10"                  # the STL-10 loader reads its splits batch by batch
    ds, probe = _shapes_only(n, shape, lazy), _shapes_only(probe_n, shape, lazy)
    prepared = Prepared(ds, None, np.arange(n), np.arange(0), Prepared(probe, None, np.arange(5000),
                                                                          np.arange(5000, probe_n)))
    est = estimate(p, prepared)
    bound = 48 if name.startswith("tang_") and p.model.arch == "tang_vgg6" else 16
    assert 2**30 < est.total < bound * 2**30, est.describe()


def test_the_estimate_is_within_an_order_of_magnitude_of_the_measured_peak(tmp_path):
    p = load(DIGITS, TINY)
    est = estimate(p, prepare(p)).total
    measure = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "print(proc.stderr, file=sys.stderr)\n")
    cmd = [sys.executable, "-c", measure, sys.executable, "-m", "neuroplastic.cli", "run", str(DIGITS), "--out",
           str(tmp_path / "runs"), "--quiet", *set_args(TINY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    code, peak_kib = map(int, proc.stdout.split())
    assert code == 0, proc.stderr
    peak = peak_kib * 1024
    assert peak / 10 < est < peak * 10, f"estimate {format_bytes(est)}, measured peak {format_bytes(peak)}"


def test_the_estimate_grows_with_the_settings_that_size_a_run():
    p = load(DIGITS, TINY)
    prepared = prepare(p)
    base = estimate(p, prepared)
    for override, part in (("model.layers=[512,512]", "parameters"), ("rule.negatives=64", "pair sets of one batch"),
                           ("train.batch_size=120", "activations of one batch"), ("rule.optimizer=\"sgd\"", None)):
        other = estimate(load(DIGITS, [*TINY, override]), prepared)
        if part is None:                      # SGD keeps no moments
            assert other.total < base.total
            continue
        before = next(x.bytes for x in base.parts if x.what == part)
        after = next(x.bytes for x in other.parts if x.what == part)
        assert after > before, override


def test_the_schema_bounds_absurd_values_on_any_machine():
    base = 'name = "t"\n'
    with pytest.raises(ProtocolError, match=r"\[train\] epochs = 1000001: must be an integer >= 1 and <= 1e\+06"):
        loads(base + "[train]\nepochs = 1000001\n")
    with pytest.raises(ProtocolError, match=r"\[model\] layers = \[8, \.\.\.\] \(101 layers\): at most 100"):
        loads(base + f"[model]\nlayers = {json.dumps([8] * 101)}\n")
    assert len(loads(base + f"[model]\nlayers = {json.dumps([8] * 100)}\n").model.layers) == 100
    spiking = base + '[engine]\nname = "brian"\nvariant = "spiking"\n[rule]\noptimizer = "sgd"\n[stimulus]\n'
    with pytest.raises(ProtocolError, match=r"\[stimulus\] glimpse_ms = 20000.0: must be a number > 0 and <= 10000"):
        loads(spiking + "glimpse_ms = 20000.0\n")
    with pytest.raises(ProtocolError, match=r"\[train\] max_memory = -1: must be a number >= 0"):
        loads(base + "[train]\nmax_memory = -1\n")


def test_format_bytes_and_available_memory():
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(128 * 10**9) == "119 GiB"
    assert format_bytes(1.5 * 2**20) == "1.5 MiB"
    assert format_bytes(10**30).endswith("YiB")
    available, machine = available_memory(), machine_memory()
    assert available is None or available > 0
    assert machine is None or available is None or machine >= available


def test_a_gpu_run_holds_one_batch_and_the_trained_weights_on_the_gpu():
    """The same bytes as on the CPU, split: what the host holds is bounded by its memory, the rest by the GPU's."""
    cpu = load(DIGITS, TINY)
    prepared = prepare(cpu)
    gpu = load(DIGITS, [*TINY, 'engine.array="torch"', 'engine.device="cuda"'])
    on_cpu, on_gpu = estimate(cpu, prepared), estimate(gpu, prepared)
    assert on_cpu.device_total == 0 and on_gpu.device_total > 0
    assert on_gpu.total + on_gpu.device_total == on_cpu.total
    assert {p.what for p in on_gpu.parts if p.device} == {"parameters", "activations of one batch",
                                                          "pair sets of one batch"}
    host_weights = next(p for p in on_gpu.parts if p.what == "initial weights")
    assert not host_weights.device and "[GPU]" in on_gpu.describe()
    # the authors' VGG6 on STL-10: a GPU-sized batch, a small host
    p = load(protocols()["tang_gll_bp_stl10_paper"], ['engine.array="torch"', 'engine.device="cuda"'])
    ds, probe = _shapes_only(100_000, (96, 96, 3), True), _shapes_only(13_000, (96, 96, 3), True)
    est = estimate(p, Prepared(ds, None, np.arange(100_000), np.arange(0),
                               Prepared(probe, None, np.arange(5000), np.arange(5000, 13_000))))
    assert est.device_total > 16 * 2**30 and est.total < 8 * 2**30, est.describe()


def test_a_gpu_too_small_for_one_batch_is_refused_naming_the_key(monkeypatch):
    import neuroplastic.engines.budget as budget

    gpu = load(DIGITS, [*TINY, 'engine.array="torch"', 'engine.device="cuda"'])
    prepared = prepare(load(DIGITS, TINY))
    monkeypatch.setattr(budget, "gpu_memory", lambda protocol: 2**14)         # 16 KiB: less than one batch
    with pytest.raises(ProtocolError, match=r"\[model\] layers = \[8,8\]: the activations of one batch alone "
                                            r"need .* more than the 16 KiB of the GPU; ") as err:
        check_budget(gpu, prepared)
    assert err.value.key == "model.layers"
    monkeypatch.setattr(budget, "gpu_memory", lambda protocol: None)      # unknown: only the host is bounded
    assert check_budget(gpu, prepared).device_total > 0
