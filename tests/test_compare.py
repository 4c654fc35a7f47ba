"""`neuroplastic compare`: linear CKA, comparability checks, and the table built from saved results."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.cli import main as cli
from neuroplastic.evaluate import linear_cka

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.epochs=1", "data.max_samples=200", "model.layers=[8, 8]"]


def _hsic_cka(x, y):
    """CKA from its definition with the centring matrix H (independent of the implementation's shortcut)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_its_definition_and_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 6)), rng.standard_normal((50, 4))
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-12)   # rotation, scale, shift
    assert linear_cka(x, y) < 0.5
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, y[:10])


def _run(out, *extra):
    args = ["run", str(ROOT / "protocols" / "clapp_digits.toml"), "--quiet", "--out", str(out)]
    assert cli([*args, *(a for o in [*QUICK, *extra] for a in ("--set", o))]) == 0
    return max(Path(out).iterdir(), key=lambda p: p.stat().st_mtime)


def test_compare_reads_the_saved_runs(tmp_path, capsys):
    a = _run(tmp_path / "runs", "seed=1")
    b = _run(tmp_path / "runs", "seed=2")
    assert cli(["compare", str(a), str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows] == ["1", "2"] * 3
    summary = json.loads((b / "summary.json").read_text())
    assert float(rows[4]["probe"]) == pytest.approx(summary["probe"]["1"])
    # A run compared with itself: identical weights and representations.
    assert float(rows[2]["weight_cosine"]) == pytest.approx(1.0) and float(rows[3]["cka"]) == pytest.approx(1.0)
    # Another seed: different weights, similar but not identical representations.
    assert abs(float(rows[4]["weight_cosine"])) < 0.5 and 0 < float(rows[4]["cka"]) < 0.999
    assert (tmp_path / "cmp" / "comparison.png").is_file() and (tmp_path / "cmp" / "comparison.pdf").is_file()
    assert "layer" in capsys.readouterr().out


def test_runs_of_another_architecture_are_refused_unless_forced(tmp_path, capsys):
    a = _run(tmp_path / "runs", "seed=1")
    b = _run(tmp_path / "runs", "model.layers=[4, 4]")
    assert cli(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and "[model] layers differs" in err and "[4, 4]" in err
    assert not (tmp_path / "cmp").exists()
    assert cli(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--force"]) == 0
    assert (tmp_path / "cmp" / "comparison.csv").is_file()


def test_a_sweep_directory_stands_for_its_runs(tmp_path):
    a = _run(tmp_path / "runs", "seed=1")
    b = _run(tmp_path / "runs", "seed=2")
    sweep = tmp_path / "runs" / "clapp_digits-sweep-0123456789"
    sweep.mkdir()
    (sweep / "points.json").write_text(json.dumps([{"overrides": ["seed=1"], "run": str(a)},
                                                    {"overrides": ["seed=2"], "run": b.name}]))
    assert cli(["compare", str(sweep), "--out", str(tmp_path / "cmp")]) == 0
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        assert {r["run"] for r in csv.DictReader(fh)} == {a.name, b.name}


def test_not_a_run_directory(tmp_path, capsys):
    assert cli(["compare", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
