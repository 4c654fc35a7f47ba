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


def test_where_draws_a_figure_from_the_runs_it_keeps_and_records_the_filters(tmp_path, monkeypatch):
    import re

    from neuroplastic import results

    drawn = []
    save = results.save_figure
    monkeypatch.setattr(results, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path))
    args = ["figures", "learning_curves", "--scale", "tiny", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out"), "--quiet", "--where", 'rule.name="clapp"']
    assert cli(args) == 0
    saved = json.loads((tmp_path / "out" / "learning_curves.json").read_text())
    assert saved["where"] == ['rule.name="clapp"'] and set(saved["runs"]) == set(saved["numbers"]) == {"CLAPP"}
    assert [d.name for d in (tmp_path / "runs").iterdir()] == saved["runs"]["CLAPP"]    # the CLAPP-s run never ran
    legend = _legend_texts(drawn[-1])                         # the figure (the first: the run's summary)
    assert "CLAPP, layer 1" in legend and not any("CLAPP-s" in t for t in legend)
    assert not any(re.search(r"[0-9a-f]{10}", t) for t in legend), legend           # method labels, not run hashes


def test_filter_recipes_keeps_the_seeds_and_methods_that_pass(tmp_path):
    from neuroplastic.figures import filter_recipes

    path = tmp_path / "two.toml"
    path.write_text('plot = "learning_curves"\n'
                    '[[runs]]\nlabel = "CLAPP-s"\nprotocol = "clapp_digits"\nset = [\'rule.name = "clapp_s"\']\n'
                    'seeds = [1, 2, 3]\n'
                    '[[runs]]\nlabel = "CLAPP"\nprotocol = "clapp_digits"\nset = [\'rule.name = "clapp"\']\n'
                    'seeds = [1, 2, 3]\n')
    recipe = load_recipe(path)
    assert filter_recipes([recipe], [], tmp_path) == [recipe]
    (by_seed,) = filter_recipes([recipe], ["seed=1..2"], tmp_path)
    assert [(s.label, s.seeds) for s in by_seed.runs] == [("CLAPP-s", (1, 2)), ("CLAPP", (1, 2))]
    (by_rule,) = filter_recipes([recipe], ["rule.name=clapp", "seed=3"], tmp_path)
    assert [(s.label, s.seeds) for s in by_rule.runs] == [("CLAPP", (3,))]
    with pytest.raises(FigureError, match=r"figure two: none of its 6 runs passes --where status=finished "
                                          r"\(its runs: CLAPP-s \(clapp_digits, rule.name = \"clapp_s\"; seeds 1, 2, 3\)"):
        filter_recipes([recipe], ["status=finished"], tmp_path)                # nothing has run yet


@pytest.mark.parametrize("figure, where, message", [
    ("learning_curves", "rule.nme=clapp", "--where rule.nme=clapp: unknown key 'rule.nme'; did you mean rule.name"),
    ("learning_curves", "seed=5", "figure learning_curves: none of its 2 runs passes --where seed=5 (its runs: CLAPP-s"),
    ("learning_curves", "seed", "--where 'seed': expected KEY=VALUE"),
    ("rate_vs_spiking", 'engine.variant="rate"', "figure rate_vs_spiking pairs its runs 'rate', 'spiking' seed by "
                                                 "seed, and --where engine.variant=\"rate\" leaves only 'rate'"),
])
def test_a_bad_or_empty_where_is_refused_before_anything_runs(tmp_path, capsys, figure, where, message):
    assert cli(["figures", figure, "--scale", "tiny", "--runs", str(tmp_path / "runs"),
                "--out", str(tmp_path / "out"), "--quiet", "--where", where]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


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
        "record('ok', {'speed-up': {'value': 2.0, 'target': '>= 1.6', 'what': 'max |W| over |W0|'}})\n")
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    monkeypatch.setitem(bench.BENCHMARKS, "broken", bench.Benchmark("bench_broken.py", "fails"))
    monkeypatch.setitem(bench.BENCHMARKS, "ok", bench.Benchmark("bench_ok.py", "works"))
    assert cli(["bench", "broken", "ok", "--out", str(tmp_path / "out")]) == 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "FAILED exit 1: no luck" in report and "| ok | speed-up | 2 | >= 1.6 | yes |" in report
    assert "| max \\|W\\| over \\|W0\\| |" in report              # a pipe in a cell does not split its row


def test_the_benchmark_against_the_authors_code_reads_their_folder_from_the_environment(tmp_path, monkeypatch):
    """Without their folder it is skipped and says why; with it, the script gets it as --authors-code."""
    monkeypatch.delenv(bench.AUTHORS_ENV, raising=False)
    results = bench.run_benchmarks(["vs_authors"], tmp_path / "none", quick=True, progress=False)
    assert bench.AUTHORS_ENV in results["vs_authors"]["skipped"]
    (tmp_path / "vision" / "CLAPPVision").mkdir(parents=True)
    (tmp_path / "bench_vs_authors.py").write_text(
        "import sys\nfrom neuroplastic.bench import record\n"
        "record('vs_authors', {'time authors/numpy': {'value': 1.0, 'target': '>= 1.0', 'what': sys.argv[-1]}})\n")
    monkeypatch.setenv(bench.AUTHORS_ENV, str(tmp_path / "vision"))
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(bench, "_missing", lambda needs: "")     # torch is optional here
    results = bench.run_benchmarks(["vs_authors"], tmp_path / "out", quick=True, progress=False)
    assert results["vs_authors"]["ratios"]["time authors/numpy"]["what"] == str(tmp_path / "vision")
    assert results["vs_authors"]["argv"][-2:] == ["--authors-code", str(tmp_path / "vision")]


@pytest.mark.slow
def test_every_figure_builds_at_tiny_scale(tmp_path):
    assert cli(["figures", "--scale", "tiny", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                "--quiet"]) == 0
    for name in recipes():
        for ext in ("png", "pdf", "json"):
            assert (tmp_path / "out" / f"{name}.{ext}").stat().st_size > 0, (name, ext)


# -- the look of run summaries and figures: drawn from small run directories written here -------------------

def _write_run(directory, *, rule="clapp_s", epochs=3, layers=(1, 2), classes=4, missing=(), spikes=False,
               probe=None, seed=1):
    """A run directory with what the plots read: manifest, metrics.csv, summary.json, features.npz and,
    for a spiking run, brian_spikes.npz and brian_monitors.npz."""
    import numpy as np

    directory.mkdir(parents=True)
    rows = ["epoch,stage,layer,name,value"]
    for e in range(1, epochs + 1):
        for l in layers:
            for name in ("loss", "modulated"):
                if (l, name) not in missing:
                    rows.append(f"{e},train,{l},{name},{0.9 / e + 0.01 * l!r}")
    probe = probe or {l: 0.5 + 0.1 * l for l in layers}
    rows += [f"{epochs},probe,{l},accuracy,{a!r}" for l, a in probe.items()]
    rows += [f"0,probe_random,{l},accuracy,{a - 0.05!r}" for l, a in probe.items()]
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")
    (directory / "summary.json").write_text(json.dumps({
        "probe": {str(l): a for l, a in probe.items()}, "probe_random": {str(l): a - 0.05 for l, a in probe.items()}}))
    (directory / "manifest.json").write_text(json.dumps({
        "name": "toy", "seed": seed, "status": "finished",
        "protocol": {"rule": {"name": rule}, "stimulus": {"glimpse_ms": 20.0}}}))
    labels = np.arange(40) % classes
    np.savez(directory / "features.npz", labels=labels, **{f"layer{l}": np.random.default_rng(l).normal(size=(40, 3))
                                                           for l in layers})
    if spikes:
        rng = np.random.default_rng(0)
        arrays = {}
        for l in layers:
            t = np.sort(rng.uniform(0, 0.5, 300))      # 25 glimpses of 20 ms; the raster shows 12 (240 ms)
            arrays[f"layer{l}/t_s"], arrays[f"layer{l}/i"] = t, rng.integers(0, 6, 300).astype(np.int32)
        np.savez(directory / "brian_spikes.npz", **arrays)
        np.savez(directory / "brian_monitors.npz", y=np.array([0] + [1, -1] * 12, dtype=float))
    return directory


def _texts(fig):
    return {t.get_text() for ax in fig.axes for t in ax.texts}


def _legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_run_summary_accuracy_axis_runs_0_to_1_with_chance_and_panel_letters(tmp_path):
    from neuroplastic.plots import run_summary
    from neuroplastic.results import read_metrics

    d = _write_run(tmp_path / "run", classes=4)
    fig = run_summary(read_metrics(d), directory=d)
    accuracy = [ax for ax in fig.axes if "accuracy" in ax.get_ylabel()]
    assert len(accuracy) == 1
    for ax in accuracy:
        assert ax.get_ylim() == (0, 1)
        chance = [l for l in ax.lines if l.get_label() == "chance (1/4)"]
        assert chance and set(chance[0].get_ydata()) == {0.25}
    assert {"a", "b", "c"} <= _texts(fig) and "d" not in _texts(fig)
    loss = fig.axes[0]
    assert list(loss.get_xticks()) == [1, 2, 3]                   # integer epochs, not 0.96-1.04
    assert "γ ≠ 0" in fig.axes[1].get_ylabel()


def test_run_summary_of_one_epoch_shows_one_tick_and_a_hinge_rule_no_gamma(tmp_path):
    from neuroplastic.plots import run_summary
    from neuroplastic.results import read_metrics

    d = _write_run(tmp_path / "run", rule="hinge_dtp", epochs=1, missing={(1, "loss"), (1, "modulated")})
    fig = run_summary(read_metrics(d), directory=d)
    assert list(fig.axes[0].get_xticks()) == [1]
    assert "γ" not in fig.axes[1].get_ylabel() and "hinge" in fig.axes[1].get_ylabel()
    assert _legend_texts(fig).count("layer 1: n/a") == 2 and "layer 2" in _legend_texts(fig)


def test_run_summary_of_a_spiking_run_has_its_raster(tmp_path):
    import numpy as np

    from neuroplastic.plots import run_summary
    from neuroplastic.results import read_metrics

    d = _write_run(tmp_path / "run", spikes=True)
    fig = run_summary(read_metrics(d), directory=d)
    raster = [ax for ax in fig.axes if ax.get_xlabel() == "time (ms)"]
    assert len(raster) == 1 and "d" in _texts(fig)
    shown = sum(len(c.get_offsets()) for c in raster[0].collections)
    with np.load(d / "brian_spikes.npz") as data:
        expected = sum(int((data[f"layer{l}/t_s"] < 12 * 0.02).sum()) for l in (1, 2))
    assert shown == expected > 0
    assert [t.get_text() for t in raster[0].get_yticklabels()] == ["layer 1", "layer 2"]
    assert "glimpse ends: saccade" in _legend_texts(fig)
    plain = run_summary(read_metrics(d))                          # without the directory: no raster, no chance
    assert not [ax for ax in plain.axes if ax.get_xlabel() == "time (ms)"]


def test_summary_figure_passes_the_run_directory(tmp_path):
    from types import SimpleNamespace

    from neuroplastic import runner

    d = _write_run(tmp_path / "run", spikes=True)
    saved = {}
    run = SimpleNamespace(directory=d, save_figure=lambda fig, name: saved.update({name: fig}))
    runner.summary_figure(run, SimpleNamespace(name="toy", seed=1))
    assert [ax for ax in saved["summary"].axes if ax.get_xlabel() == "time (ms)"]


def test_method_colours_are_unique_in_a_figure_and_the_same_across_figures():
    from neuroplastic.plots import METHOD_STYLES, method_styles

    known = ["CLAPP-s", "CLAPP", "hinge E2E BP", "hinge E2E FA", "GLL-BP", "GLL-RF", "GLL-URF", "RLL", "DTP"]
    many = method_styles([*known, "new rule", "another", "third"])
    assert len({c for c, _ in many.values()}) == len(many) and len({m for _, m in many.values()}) == len(many)
    assert all(many[k] == METHOD_STYLES[k] for k in known)
    assert method_styles(["CLAPP"])["CLAPP"] == method_styles(["RLL", "CLAPP"])["CLAPP"]
    assert method_styles(["new rule"]) == method_styles(["new rule"])             # deterministic
    assert method_styles(["new rule", "CLAPP-s"])["new rule"] == method_styles(["new rule"])["new rule"]


def test_probe_comparison_gives_every_method_its_own_colour_without_hatching(tmp_path):
    from types import SimpleNamespace

    from matplotlib.colors import to_hex

    from neuroplastic.plots import probe_comparison

    labels = ["CLAPP-s", "CLAPP", "hinge E2E BP", "hinge E2E FA", "GLL-BP", "GLL-RF", "GLL-URF", "RLL", "DTP",
              "new rule"]
    runs = {label: [SimpleNamespace(directory=_write_run(tmp_path / f"{k}-{s}", classes=10, seed=s))
                    for s in (1, 2)] for k, label in enumerate(labels)}
    fig, numbers = probe_comparison(runs, title="t")
    ax = fig.axes[0]
    legend = ax.get_legend()
    colours = {t.get_text().split(" (n=")[0]: to_hex(h.get_facecolor())
               for h, t in zip(legend.legend_handles, legend.get_texts()) if " (n=" in t.get_text()}
    assert set(colours) == set(labels) and len(set(colours.values())) == len(labels)
    assert not any(p.get_hatch() for a in fig.axes for p in a.patches)
    assert ax.get_ylim() == (0, 1) and any(l.get_label() == "chance (1/10)" for l in ax.lines)
    assert {"a", "b"} <= _texts(fig)
    assert "SD" in legend.get_title().get_text()
    assert numbers["RLL"]["layer1"]["gain_points"][0] == pytest.approx(5.0)


def test_learning_curves_say_n_a_for_what_a_method_did_not_record(tmp_path):
    from types import SimpleNamespace

    from neuroplastic.plots import learning_curves

    runs = {"CLAPP-s": [SimpleNamespace(directory=_write_run(tmp_path / f"a{s}", seed=s)) for s in (1, 2)],
            "hinge E2E BP": [SimpleNamespace(directory=_write_run(tmp_path / f"b{s}", seed=s, missing={
                (1, "loss"), (1, "modulated"), (2, "modulated")})) for s in (1, 2)]}
    fig, numbers = learning_curves(runs)
    texts = _legend_texts(fig)
    assert "hinge E2E BP, layer 2: n/a (modulation events)" in texts and "CLAPP-s, layer 1" in texts
    assert "SD" in fig.axes[1].get_legend().get_title().get_text()
    assert {"a", "b"} <= _texts(fig) and list(fig.axes[0].get_xticks()) == [1, 2, 3]
    colours = {l.get_label().split(",")[0]: l.get_color() for l in fig.axes[0].lines}
    assert colours["CLAPP-s"] != colours["hinge E2E BP"]


class Toy:
    """What the rate_vs_spiking figure reads of a Run, beside its directory: weights and the manifest."""

    def __init__(self, directory, seed, w0, w1, data=None):
        self.directory, self.w0, self.w1 = directory, w0, w1
        self.manifest = {"seed": seed, "protocol": {"stimulus": {"glimpse_ms": 20.0}, "data": data or {}}}

    def initial_params(self):
        return self.w0

    def latest_checkpoint(self):
        return 3, {f"param/{k}": v for k, v in self.w1.items()}, {}


def test_rate_vs_spiking_shows_the_weight_changes_of_both_layers(tmp_path):
    import numpy as np

    from neuroplastic.plots import rate_vs_spiking

    rng = np.random.default_rng(0)
    runs = {"rate": [], "spiking": []}
    for seed in (1, 2):
        w0 = {"1/W": rng.normal(size=(6, 5)), "2/W": rng.normal(size=(4, 6))}
        change = {k: rng.normal(size=v.shape) for k, v in w0.items()}
        for label in runs:
            noise = 0.0 if label == "rate" else 0.3
            w1 = {k: w0[k] + change[k] + noise * rng.normal(size=v.shape) for k, v in w0.items()}
            d = _write_run(tmp_path / f"{label}{seed}", spikes=label == "spiking", classes=10, seed=seed)
            runs[label].append(Toy(d, seed, w0, w1))
    fig, numbers = rate_vs_spiking(runs)
    dw = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_title().startswith("weight change")}
    assert set(dw) == {"weight change, layer 1", "weight change, layer 2"}
    assert len(dw["weight change, layer 1"].collections[0].get_offsets()) == 30
    assert len(dw["weight change, layer 2"].collections[0].get_offsets()) == 24
    for l in ("1", "2"):
        assert f"r = {numbers['delta_w_correlation'][l]['mean']:.2f}" in dw[f"weight change, layer {l}"].get_title()
    accuracy = [ax for ax in fig.axes if "accuracy" in ax.get_ylabel()]
    assert accuracy and all(ax.get_ylim() == (0, 1) for ax in accuracy)
    assert all(any(l.get_label() == "chance (1/10)" for l in ax.lines) for ax in accuracy)
    assert set("abcdefg") <= _texts(fig)
    assert [ax for ax in fig.axes if ax.get_xlabel() == "time (ms)" and ax.collections]     # the raster


def test_rate_vs_spiking_pairs_cka_by_sample_id_not_by_row(tmp_path):
    """Seed 1: the spiking run probed 60 samples, 50 of them the rate run's, in another order; its features
    are the rate run's rotated and scaled, so CKA on the shared samples is 1, and row by row it is not.
    Seed 2 shares too few samples and seed 3's rate run saved no ids of its subset: NaN, with the reason."""
    import numpy as np

    from neuroplastic.evaluate import linear_cka
    from neuroplastic.evaluate.similarity import MIN_SHARED
    from neuroplastic.plots import rate_vs_spiking

    rng = np.random.default_rng(0)
    table = {l: rng.normal(size=(100, 5)) for l in (1, 2)}           # features of each sample of the source
    rotation = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    ids = {1: (np.arange(60), rng.permutation(np.arange(10, 70))),
           2: (np.arange(60), np.r_[np.arange(55, 60), np.arange(60, 115) % 100 + 100]),
           3: (None, np.arange(60))}
    runs = {"rate": [], "spiking": []}
    for seed, (rate_ids, spiking_ids) in ids.items():
        w0 = {"1/W": rng.normal(size=(5, 4)), "2/W": rng.normal(size=(5, 5))}
        for label, sample in (("rate", rate_ids), ("spiking", spiking_ids)):
            d = _write_run(tmp_path / f"{label}{seed}", spikes=label == "spiking", seed=seed)
            rows = np.arange(60) if sample is None else sample
            arrays = {f"layer{l}": (table[l][rows % 100] if label == "rate" else 3 * table[l][rows % 100] @ rotation)
                      for l in (1, 2)}
            np.savez(d / "features.npz", labels=rows % 4, **arrays,
                     **({} if sample is None else {"sample_ids": sample}))
            runs[label].append(Toy(d, seed, w0, {k: v + 1 for k, v in w0.items()},
                                   data={"max_samples": 60} if sample is None else None))
    fig, numbers = rate_vs_spiking(runs)
    for l in ("1", "2"):
        first, second, third = numbers["cka"][l]["values"]
        assert first == pytest.approx(1.0)
        with np.load(tmp_path / "rate1" / "features.npz") as r, np.load(tmp_path / "spiking1" / "features.npz") as s:
            assert linear_cka(r[f"layer{l}"], s[f"layer{l}"]) < 0.5      # what pairing row by row would show
        assert np.isnan(second) and np.isnan(third)
    assert numbers["cka_samples"] == [50, 5, 0]
    assert numbers["cka_notes"][0] == ""
    assert numbers["cka_notes"][1] == (f"seed 2: CKA not given: the two runs share 5 probed samples "
                                       f"(at least {MIN_SHARED} needed)")
    assert numbers["cka_notes"][2].startswith("seed 3: CKA not given: the rate run saved no sample ids")
    panel = next(ax for ax in fig.axes if ax.get_ylabel() == "linear CKA (rate, spiking)")
    assert "on 50 shared samples" in panel.get_title()
    assert any("seed 2: CKA not given" in t.get_text() for t in panel.texts)
