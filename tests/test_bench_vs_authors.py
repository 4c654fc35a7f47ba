"""``benchmarks/bench_vs_authors.py`` starts: its help, its refusal of a folder without the authors' code, its FLOP count.

The benchmark itself needs the authors' code and minutes of CPU; it is run by hand (its docstring).
"""
import subprocess
import sys
from pathlib import Path

from helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_vs_authors.py"


def _run(*argv):
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60)


def test_help_runs():
    run = _run("--help")
    assert run.returncode == 0, run.stderr
    for option in ("--authors-code", "--rule", "--threads", "--batch", "--repeats", "--steps", "--device"):
        assert option in run.stdout


def test_refuses_a_folder_without_their_code(tmp_path):
    run = _run("--authors-code", str(tmp_path))
    assert run.returncode == 2
    assert "no CLAPPVision folder there" in run.stderr


def test_flop_count_of_the_first_layer():
    bench = benchmark_module("bench_vs_authors")
    B = 32
    flops = bench.step_flops(1, B, "clapp_s", 16)
    # 3x3 conv 1 -> 128 channels on 7 x 7 patches of 16 x 16 per image, forward and kernel gradient
    assert flops["conv"] == 2 * 2 * (B * 49 * 256) * 128 * 9
    contexts = sum(B * (7 - k) * 7 for k in (2, 3, 4, 5, 6))
    assert flops["scores"] == 3 * 2 * contexts * 128 ** 2 + 3 * 2 * contexts * 128 * 17
    assert bench.step_flops(6, B, "clapp_s", 16)["conv"] > 1.8e12          # the whole VGG-6: ~1.9 TFLOP
