"""One VGG-6 training step of conv CLAPP-s and CLAPP agrees with the authors' code (Illing et al. 2021).

Runs ``benchmarks/check_vs_authors.py`` (same weights, same batch, their negative sampling fixed to
the same pairs), in float64, where the two sides must agree to 1e-10 (in float32 the kernel gradient of
a layer whose terms nearly cancel differs by rounding at the 1e-3 level); needs their ``vision`` folder, named by NEUROPLASTIC_AUTHORS_CODE, and torch.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AUTHORS = os.environ.get("NEUROPLASTIC_AUTHORS_CODE")


@pytest.mark.slow
@pytest.mark.skipif(not AUTHORS, reason="NEUROPLASTIC_AUTHORS_CODE does not name the authors' 'vision' folder")
@pytest.mark.parametrize("rule, constant", [("clapp_s", "1"), ("clapp", "2")])
def test_one_step_matches_authors(rule, constant):
    pytest.importorskip("torch")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_vs_authors.py"), "--authors-code", AUTHORS,
                          "--rule", rule, "--dtype", "float64"], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "AGREE" in out
    assert out.count(f"(expected constant {constant})") == 6          # every layer's loss ratio, measured
    assert "above tolerance" not in out
