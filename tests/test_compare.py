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


def test_cka_pairs_rows_by_sample_when_runs_subsample_differently(tmp_path, capsys):
    """Two seeds keep different random `max_samples` subsets: CKA must use the samples both probed, row for row."""
    from sklearn.datasets import load_digits

    from neuroplastic.compare import MIN_SHARED

    a = _run(tmp_path / "runs", "seed=1")
    b = _run(tmp_path / "runs", "seed=2")
    fa, fb = (np.load(r / "features.npz") for r in (a, b))
    # The ids are the samples' indices in the whole data set: the subset each seed kept, and its labels.
    for f, seed in ((fa, 1), (fb, 2)):
        assert np.array_equal(f["sample_ids"], np.sort(np.random.default_rng(seed).permutation(1797)[:200]))
        assert np.array_equal(f["labels"], load_digits().target[f["sample_ids"]])
    shared = np.intersect1d(fa["sample_ids"], fb["sample_ids"])
    assert MIN_SHARED <= len(shared) < 200
    ia, ib = (np.searchsorted(f["sample_ids"], shared) for f in (fa, fb))
    assert cli(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    for layer, row in zip((1, 2), rows[2:]):
        x, y = fb[f"layer{layer}"], fa[f"layer{layer}"]
        by_sample = _hsic_cka(x[ib].astype(np.float64), y[ia].astype(np.float64))
        assert float(row["cka"]) == pytest.approx(by_sample, rel=1e-6)
        assert int(row["cka_samples"]) == len(shared)
        assert abs(by_sample - linear_cka(x, y)) > 0.05           # row i of one run is not row i of the other
    assert f"on the {len(shared)} samples it shares with the reference" in table


def _rewrite_features(run, keep_ids=None, **arrays):
    with np.load(run / "features.npz") as f:
        data = {k: f[k] for k in f.files}
    if keep_ids is False:
        data.pop("sample_ids")
    data.update(arrays)
    np.savez(run / "features.npz", **data)


def test_cka_is_nan_with_a_reason_when_samples_cannot_be_paired(tmp_path, capsys):
    from neuroplastic.compare import MIN_SHARED

    a = _run(tmp_path / "runs", "seed=1")
    b = _run(tmp_path / "runs", "seed=2")
    cmp = ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]

    def cka_and_table(*more):
        assert cli([*cmp, *more]) == 0
        table = capsys.readouterr().out
        with open(tmp_path / "cmp" / "comparison.csv") as fh:
            rows = list(csv.DictReader(fh))
        return [float(r["cka"]) for r in rows], rows, table

    # Too few samples in common: NaN, said once, not a number from a handful of rows.
    ids = np.load(b / "features.npz")["sample_ids"].copy()
    ref = np.load(a / "features.npz")["sample_ids"]
    ids = np.where(np.isin(ids, ref), np.arange(100_000, 100_000 + len(ids)), ids)     # ids the reference lacks
    ids[:MIN_SHARED - 1] = ref[:MIN_SHARED - 1]
    _rewrite_features(b, sample_ids=np.sort(ids))
    cka, rows, table = cka_and_table()
    assert cka[:2] == pytest.approx([1.0, 1.0]) and np.isnan(cka[2:]).all()
    assert rows[2]["cka_samples"] == str(MIN_SHARED - 1)
    assert table.count(f"shares {MIN_SHARED - 1} probed samples with the reference (at least {MIN_SHARED}") == 1
    # A run made before ids were saved, with a max_samples subset: its rows cannot be paired.
    _rewrite_features(b, keep_ids=False)
    cka, rows, table = cka_and_table()
    assert np.isnan(cka[2:]).all() and "saved no sample ids" in rows[2]["cka_note"]
    assert table.count("saved no sample ids") == 1
    # ... and as the reference, no run can be paired with it.
    assert cli(["compare", str(b), str(a), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "the reference run saved no sample ids" in table
    # A run that probed its data whole needs no saved ids: its rows are the samples in order.
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["protocol"]["data"]["max_samples"] = 0
    (b / "manifest.json").write_text(json.dumps(manifest))
    cka, rows, _ = cka_and_table("--force")                  # max_samples now differs
    assert np.isfinite(cka).all() and rows[2]["cka_samples"] == str(len(np.intersect1d(ref, np.arange(200))))
