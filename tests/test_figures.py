"""`neuroplastic figures` and `neuroplastic bench`: recipes, reuse of finished runs, reports."""
import json
from pathlib import Path

import pytest

from neuroplastic import bench
from neuroplastic.cli import main as cli
from neuroplastic.figures import FigureError, load_recipe, recipes

ROOT = Path(__file__).resolve().parents[1]


def test_every_committed_recipe_loads_at_every_scale():
    assert {"saccades", "learning_curves", "rate_vs_spiking", "probe_comparison", "performance"} <= set(recipes())
    for path in recipes().values():
        for scale in ("tiny", "quick", "paper"):
            load_recipe(path, scale)


@pytest.mark.parametrize("text, message", [
    ('plot = "histogram"', r"\[plot\] = 'histogram'; allowed: .*learning_curves"),
    ('plot = "learning_curves"\ncolour = 1', r"\[colour\] unknown key; allowed: "),
    ('plot = "learning_curves"\n[[runs]]\nprotocol = "nope"', r"\[runs.0\] protocol = 'nope': no such protocol"),
    ('plot = "learning_curves"\n[[runs]]\nprotocol = "clapp_digits"\nseeds = []', r"\[runs.0\] seeds = \[\]"),
    ('plot = "performance"\nbench = ["fastest"]', r"\[bench\] 'fastest' is not a benchmark; allowed: "),
    ('plot = "learning_curves"\n[scale.huge]', r"\[scale.huge\] unknown scale; allowed: tiny, quick, paper"),
])
def test_bad_recipes_name_the_file_key_and_allowed_values(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FigureError, match=message) as err:
        load_recipe(path)
    assert str(path) in str(err.value)


def test_learning_curves_build_from_runs_and_reuse_them(tmp_path, capsys):
    args = ["figures", "learning_curves", "--scale", "tiny", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out"), "--quiet"]
    assert cli(args) == 0
    for ext in ("png", "pdf", "json"):
        assert (tmp_path / "out" / f"learning_curves.{ext}").stat().st_size > 0
    numbers = json.loads((tmp_path / "out" / "learning_curves.json").read_text())
    assert set(numbers["numbers"]) == {"CLAPP-s", "CLAPP"} and len(numbers["runs"]["CLAPP"]) == 1
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    stamps = [(r / "manifest.json").stat().st_mtime_ns for r in runs]
    assert cli(args) == 0                                          # finished runs are reused, not re-run
    assert [(r / "manifest.json").stat().st_mtime_ns for r in runs] == stamps


def test_unknown_figure_is_named(tmp_path, capsys):
    assert cli(["figures", "fig9", "--out", str(tmp_path)]) == 2
    assert "no figure recipe 'fig9'; known: " in capsys.readouterr().err


def test_unknown_benchmark_is_named_and_nothing_is_written(tmp_path, capsys):
    assert cli(["bench", "fastest", "--out", str(tmp_path / "bench")]) == 2
    assert "no benchmark 'fastest'; known: rate_vs_autograd" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_bench_writes_a_report_with_ratio_machine_and_versions(tmp_path):
    assert cli(["bench", "stl10_memory", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    ratio = results["stl10_memory"]["ratios"]["peak RSS / 2 GiB, loader"]
    assert 0 < ratio["value"] < 1 and ratio["target"] == "<= 1.0"
    report = (tmp_path / "report.md").read_text()
    assert "| stl10_memory | peak RSS / 2 GiB, loader |" in report and "| yes |" in report
    assert "cores" in report and "numpy" in report
    assert (tmp_path / "report.png").is_file() and (tmp_path / "stl10_memory.log").is_file()


def test_a_failing_benchmark_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    (tmp_path / "bench_broken.py").write_text("raise SystemExit('no luck')\n")
    (tmp_path / "bench_ok.py").write_text(
        "from neuroplastic.bench import record\n"
        "record('ok', {'speed-up': {'value': 2.0, 'target': '>= 1.6', 'what': 'x'}})\n")
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    monkeypatch.setitem(bench.BENCHMARKS, "broken", bench.Benchmark("bench_broken.py", "fails"))
    monkeypatch.setitem(bench.BENCHMARKS, "ok", bench.Benchmark("bench_ok.py", "works"))
    assert cli(["bench", "broken", "ok", "--out", str(tmp_path / "out")]) == 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "FAILED exit 1: no luck" in report and "| ok | speed-up | 2 | >= 1.6 | yes |" in report


@pytest.mark.slow
def test_every_figure_builds_at_tiny_scale(tmp_path):
    assert cli(["figures", "--scale", "tiny", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                "--quiet"]) == 0
    for name in recipes():
        for ext in ("png", "pdf", "json"):
            assert (tmp_path / "out" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
