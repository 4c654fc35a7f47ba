"""`neuroplastic runs` and run selection: the listing, `--where` filters, labels by differing settings,
directories that are not runs, and `neuroplastic compare` by name and filter."""
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from neuroplastic.catalog import Filter, labels, parse_where, scan, select, settings, show
from neuroplastic.cli import main as cli
from neuroplastic.compare import compare_runs, comparison_figure, expand_runs
from neuroplastic.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "data.max_samples=120", "model.layers=[6, 6]", "evaluate.baseline=false"]
HASH = re.compile(r"-[0-9a-f]{10}\b")


def _run(out, *extra):
    args = ["run", str(ROOT / "protocols" / "clapp_digits.toml"), "--quiet", "--out", str(out)]
    assert cli([*args, *(a for o in [*TINY, *extra] for a in ("--set", o))]) == 0
    return max(Path(out).iterdir(), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three finished runs (clapp_s seeds 2 and 1, clapp seed 1), a damaged run, a foreign directory, a sweep."""
    root = tmp_path_factory.mktemp("store") / "runs"
    runs = {"s2": _run(root, "seed=2"), "s1": _run(root, "seed=1"), "c1": _run(root, "seed=1", 'rule.name="clapp"')}
    for second, run in enumerate(runs.values()):          # "created" has 1 s resolution: make the order explicit
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["created"] = f"2026-01-01T00:00:0{second}+0000"
        (run / "manifest.json").write_text(json.dumps(manifest))
    damaged = root / "clapp_digits-0000000000"
    shutil.copytree(runs["s1"], damaged)
    (damaged / "manifest.json").write_text('{"name": "clapp_digits", "protocol": ')      # cut off mid-write
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run\n")
    sweep = root / "clapp_digits-sweep-0123456789"
    sweep.mkdir()
    (sweep / "points.json").write_text(json.dumps([{"run": runs["s1"].name}, {"run": runs["s2"].name}]))
    return root, runs


def _lines(out: str) -> list[str]:
    return [l for l in out.splitlines() if l.strip()]


def test_the_listing_has_one_line_per_run_with_what_sets_it_apart(store, capsys):
    root, runs = store
    assert cli(["runs", str(root)]) == 0
    lines = _lines(capsys.readouterr().out)
    head = lines[0].split()
    assert head[:5] == ["run", "protocol", "settings", "seed", "status"]
    by_run = {l.split()[0]: l for l in lines[2:]}
    assert set(by_run) >= {p.name for p in runs.values()}
    # Sorted by protocol name, then seed, then date: seed 1 (clapp_s, made before clapp) first, seed 2 last.
    order = [l.split()[0] for l in lines[2:5]]
    assert order == [runs["s1"].name, runs["c1"].name, runs["s2"].name]
    # The settings column holds what differs among the runs (the rule), not what they share.
    assert "rule.name=clapp_s" in by_run[runs["s1"].name] and "rule.name=clapp " in by_run[runs["c1"].name] + " "
    assert "model.layers" not in lines[2] and "max_samples" not in lines[2]
    summary = json.loads((runs["s2"] / "summary.json").read_text())
    probe = f"{summary['probe']['1']:.3f} {summary['probe']['2']:.3f}"
    fields = by_run[runs["s2"].name].split()
    assert fields[1] == "clapp_digits" and fields[3] == "2" and fields[4] == "finished" and probe in by_run[runs["s2"].name]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d$", by_run[runs["s2"].name])
    # Directories that are not readable runs are listed, each saying why, not a traceback.
    assert "damaged" in by_run["clapp_digits-0000000000"]
    assert "not a run directory" in by_run["notes"]
    assert "sweep directory (2 points" in by_run["clapp_digits-sweep-0123456789"]


@pytest.mark.parametrize("where,expected", [
    (["seed=2"], {"s2"}),
    (["rule.name=clapp"], {"c1"}),
    (["status=finished"], {"s1", "s2", "c1"}),
    (["rule.lr=1e-3"], {"s1", "s2", "c1"}),             # TOML scalar: 1e-3 is the manifest's 0.001
    (["rule.lr=3e-4"], set()),
    (["model.layers=[6,6]", "seed=1..1"], {"s1", "c1"}),
    (["name=clapp_digits", "rule.name=clapp_s", "seed=1..2"], {"s1", "s2"}),
    (["evaluate.baseline=false"], {"s1", "s2", "c1"}),
    (["train.epochs=true"], set()),                      # true is not 1
])
def test_filters_compare_with_the_resolved_protocol(store, capsys, where, expected):
    root, runs = store
    assert cli(["runs", str(root), *(a for w in where for a in ("--where", w))]) == 0
    out = capsys.readouterr().out
    listed = {k for k, p in runs.items() if p.name in out}
    assert listed == expected
    assert "0000000000" not in out.split("(")[0]             # the damaged directory is not a match
    if not expected:
        assert "no runs in" in out


def test_an_unknown_key_is_refused_with_the_allowed_ones(store, capsys):
    root, _ = store
    assert cli(["runs", str(root), "--where", "rule.lrate=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "rule.lrate" in err and "rule.lr" in err and "Traceback" not in err
    assert cli(["runs", str(root), "--where", "seed"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert cli(["compare", "clapp_digits", "--store", str(root), "--where", "colour=red"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def test_a_missing_store_is_an_error_not_a_traceback(tmp_path, capsys):
    assert cli(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no results store" in capsys.readouterr().err


def test_compare_by_protocol_name_and_filter(store, tmp_path, capsys):
    root, runs = store
    out = tmp_path / "cmp"
    assert cli(["compare", "clapp_digits", "--store", str(root), "--where", "rule.name=clapp_s", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    with open(out / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    # Seed 1 first (the reference) though seed 2 was made first; the damaged and sweep directories are left out.
    assert [r["run"] for r in rows] == [runs["s1"].name] * 2 + [runs["s2"].name] * 2
    assert [r["label"] for r in rows] == ["seed=1", "seed=1", "seed=2", "seed=2"]
    assert float(rows[0]["cka"]) == pytest.approx(1.0)
    # The table names runs by their settings, never by hash.
    assert not HASH.search(table.split("written:")[0])
    assert re.search(r"^seed=2 +1 ", table, re.M)
    # A run directory's name within the store works too, and the order given is kept.
    assert cli(["compare", runs["c1"].name, runs["s2"].name, "--store", str(root), "--out", str(out)]) == 0
    with open(out / "comparison.csv") as fh:
        labelled = [r["label"] for r in csv.DictReader(fh)][::2]
    assert labelled == ["seed=1 rule.name=clapp", "seed=2 rule.name=clapp_s"]


def test_names_filters_and_paths_select_runs(store):
    root, runs = store
    by_filter = expand_runs([], store=root, where=["seed=1"])
    assert [r.directory.name for r in by_filter] == [runs["s1"].name, runs["c1"].name]
    # Filters apply to run directories given by path, too.
    by_path = expand_runs([runs["s2"], runs["s1"]], where=["seed=1"])
    assert [r.directory for r in by_path] == [runs["s1"]]
    with pytest.raises(RunError, match="no run named so.*protocols there: clapp_digits"):
        expand_runs(["clapp_speech_quick"], store=root)
    with pytest.raises(RunError, match="damaged"):
        expand_runs(["clapp_digits-0000000000"], store=root)
    with pytest.raises(RunError, match="none of the 3 selected runs passes --where seed=7"):
        expand_runs(["clapp_digits"], store=root, where=["seed=7"])


def test_the_figure_is_labelled_by_settings(store):
    root, runs = store
    rows = compare_runs(expand_runs(["clapp_digits"], store=root))
    fig = comparison_figure(rows)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["seed=1 rule.name=clapp_s", "seed=1 rule.name=clapp", "seed=2 rule.name=clapp_s"]
    assert "seed=1 rule.name=clapp_s" in fig.axes[1].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_labels_show_only_what_differs():
    def manifest(seed, **tables):
        protocol = {"name": "p", "description": "x", "seed": seed, "rule": {"name": "clapp_s", "lr": 1e-3},
                    "model": {"layers": [64, 64]}, "train": {"max_memory": "1G"}}
        for dotted, value in tables.items():
            table, key = dotted.split("__")
            protocol.setdefault(table, {})[key] = value
        return {"name": protocol["name"], "seed": seed, "status": "finished", "protocol": protocol}

    a, b = manifest(1), manifest(2, rule__lr=3e-4, model__layers=[32, 32], train__max_memory="2G")
    assert labels([a, b]) == ["seed=1 rule.lr=0.001 model.layers=[64,64]", "seed=2 rule.lr=0.0003 model.layers=[32,32]"]
    assert labels([a, a]) == ["p", "p"]                      # nothing differs: the protocol name
    other = {**manifest(1), "name": "q", "protocol": {**manifest(1)["protocol"], "name": "q"}}
    assert labels([a, other]) == ["p", "q"]
    # A label's settings read back as filters that select the run.
    flat = settings(b)
    for part in labels([a, b])[1].split():
        assert parse_where([part])[0].matches(flat)
    assert show("clapp") == "clapp" and show("true") == '"true"' and show([1.5, "a b"]) == '[1.5,"a b"]'


def test_parse_where():
    assert parse_where(["seed=1..3"]) == [Filter("seed", "1..3", (1, 3), is_range=True)]
    assert parse_where(["rule.lr = 3e-4"])[0].value == 3e-4
    assert parse_where(["data.path=/data/stl10_binary"])[0].value == "/data/stl10_binary"
    with pytest.raises(RunError, match="empty"):
        parse_where(["seed=3..1"])


def test_scan_lists_damaged_and_foreign_directories(store):
    root, runs = store
    entries = {e.name: e for e in scan(root)}
    assert entries["clapp_digits-0000000000"].manifest is None
    assert entries["notes"].problem and "manifest.json" in entries["notes"].problem
    assert [e.name for e in select(list(entries.values()), parse_where(["seed=2"]))] == [runs["s2"].name]
