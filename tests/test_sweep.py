"""`neuroplastic sweep`: grid parsing, a local sweep whose points are ordinary runs, re-runs that run
only what is missing, failures that stop nothing, and worker processes killed mid-point (locally and
on a dask.distributed cluster) without any finished point being lost or run twice."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import set_args

from neuroplastic.cli import main
from neuroplastic.protocol import ProtocolError, load
from neuroplastic.results import Run, read_metrics
from neuroplastic.sweep import parse_grid, plan, read_events

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
# ~1-2 s a point, most of it the summary figure.
TINY = ["train.epochs=1", "data.max_samples=200", "model.layers=[8]", "evaluate.baseline=false"]
# Long enough to be killed after its epoch-2 checkpoint (~25 ms an epoch alone; several seconds left).
LONG = ["data.max_samples=600", "model.layers=[16,16]", "train.batch_size=16", "train.epochs=30",
        "evaluate.baseline=false"]


def _sweep(out: Path, grid: list[str], sets: list[str], *extra: str) -> tuple[int, str, str]:
    argv = ["sweep", str(QUICKSTART), "--out", str(out), "--quiet", *(a for g in grid for a in ("--grid", g)),
            *set_args(sets), *extra]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


def _summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _events(sweep_dir: Path, point: int, event: str) -> list[dict]:
    return [e for e in read_events(sweep_dir) if e["point"] == point and e["event"] == event]


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


# -- the grid -----------------------------------------------------------------------------------------
def test_grid_values_ranges_and_lists():
    assert parse_grid("rule.lr=1e-3,3e-4").texts == ("1e-3", "3e-4")
    assert parse_grid("seed=1..5").texts == ("1", "2", "3", "4", "5")
    assert parse_grid("seed = 1..3, 7").texts == ("1", "2", "3", "7")
    assert parse_grid("model.layers=[8],[8, 8]").texts == ("[8]", "[8, 8]")
    assert parse_grid('rule.optimizer="adam",sgd').texts == ('"adam"', "sgd")
    p = plan(QUICKSTART, ["rule.lr=1e-3,3e-4", "seed=1..3"], TINY)
    assert [pt.values for pt in p.points][:2] == [{"rule.lr": "1e-3", "seed": "1"}, {"rule.lr": "1e-3", "seed": "2"}]
    assert len(p.points) == 6 and len({pt.run_name for pt in p.points}) == 6
    assert p.points[5].protocol.rule.lr == 3e-4 and p.points[5].protocol.seed == 3
    assert p.points[5].protocol.digest() == load(QUICKSTART, [*TINY, "rule.lr=3e-4", "seed=3"]).digest()
    assert p.directory != plan(QUICKSTART, ["rule.lr=1e-3,3e-4", "seed=1..4"], TINY).directory


@pytest.mark.parametrize("grid, sets, key, words", [
    (["rule.lrr=1e-3"], TINY, "rule.lrr", ["unknown key", "did you mean 'lr'"]),
    (["rule.lr=1e-3,-1"], TINY, "rule.lr", ["--grid rule.lr", "lr = -1", "must be a number > 0"]),
    (["rule.optimizer=adam,rmsprop"], TINY, "rule.optimizer", ['= "rmsprop"', "one of 'adam', 'sgd'"]),
    (["seed=5..1"], TINY, "seed", ["a..b needs a <= b"]),
    (["seed=1.5..3"], TINY, "seed", ["takes integers"]),
    (["seed=1,,2"], TINY, "seed", ["empty value"]),
    (["rule.lr=1e-3,0.001"], TINY, "rule.lr", ["given twice"]),
    (["seed"], TINY, "", ["table.key=v1,v2"]),
    (["seed=1,2", "seed=3"], TINY, "seed", ["given twice", "one --grid"]),
    (["seed=1,2"], [*TINY, "seed=3"], "seed", ["both --set and --grid"]),
    # each value is fine alone; one combination is not
    (["model.layers=[8],[8,8]", "evaluate.layers=[1],[2]"], [o for o in TINY if not o.startswith("model.")],
     "evaluate.layers", ["--grid point model.layers=[8] evaluate.layers=[2]", "layer 2 does not exist"]),
])
def test_bad_grid_names_the_key_and_what_is_allowed_before_anything_runs(tmp_path, grid, sets, key, words):
    with pytest.raises(ProtocolError) as info:
        plan(QUICKSTART, grid, sets)
    assert info.value.key == key
    for w in words:
        assert w in str(info.value)
    code, out, err = _sweep(tmp_path / "runs", grid, sets)
    assert code == 2 and err.startswith("neuroplastic: error: ") and words[0] in err
    assert not (tmp_path / "runs").exists(), "nothing is written, nothing runs"


@pytest.mark.parametrize("grid, words", [
    (["seed=1..1000000000"], ["--grid seed=1..1000000000: 1000000000 values", "at most 10000 points"]),
    (["seed=1..6000,6001..12000"], ["--grid seed=1..6000,6001..12000: 12000 values"]),
    ([f"seed={','.join(map(str, range(20_000)))}"], ["--grid seed=0,1,2,", "...: 20000 values"]),
    (["seed=1..200", "train.batch_size=1..100"], ["200 (seed) x 100 (train.batch_size) = 20000 points"]),
])
def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path, grid, words):
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ProtocolError) as info:
            plan(QUICKSTART, grid, TINY, tmp_path)
        seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for w in words:
        assert w in str(info.value)
    assert seconds < 0.5 and peak < 20e6, (seconds, peak)
    assert not any(tmp_path.iterdir())


def test_scheduler_without_a_cluster_is_a_clear_error(tmp_path):
    pytest.importorskip("distributed")     # first: its defaults enter dask's config, not just the context's
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code, _, err = _sweep(tmp_path, ["seed=1"], TINY, "--scheduler", "tcp://127.0.0.1:9")
    assert code == 2 and "--scheduler tcp://127.0.0.1:9: cannot connect to a dask scheduler" in err
    assert not any(tmp_path.iterdir())


def test_scheduler_without_dask_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)          # `import distributed` raises ImportError
    code, _, err = _sweep(tmp_path, ["seed=1"], TINY, "--scheduler", "tcp://127.0.0.1:8786")
    assert code == 2 and "pip install neuroplastic[sweep]" in err
    assert not any(tmp_path.iterdir())


# -- a local sweep ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Four tiny points on two local workers."""
    out = tmp_path_factory.mktemp("sweep")
    grid = ["rule.lr=1e-3,3e-4", "seed=1..2"]
    start = time.monotonic()
    code, stdout, stderr = _sweep(out, grid, TINY, "--workers", "2")
    return {"out": out, "grid": grid, "plan": plan(QUICKSTART, grid, TINY, out), "code": code,
            "stdout": stdout, "stderr": stderr, "seconds": time.monotonic() - start}


def test_local_sweep_runs_every_point_as_an_ordinary_run(local):
    sweep_dir = local["plan"].directory
    assert local["code"] == 0, local["stdout"] + local["stderr"]
    assert sweep_dir.name.startswith("clapp_digits-sweep-")
    points = json.loads((sweep_dir / "points.json").read_text())
    rows = _summary(sweep_dir)
    assert [r["point"] for r in rows] == ["0", "1", "2", "3"] and len(points) == 4
    assert [(r["rule.lr"], r["seed"]) for r in rows] == [("1e-3", "1"), ("1e-3", "2"), ("3e-4", "1"), ("3e-4", "2")]
    for point, row in zip(points, rows):
        # the run directory of this point is exactly that of `neuroplastic run --set ...` with its overrides
        directory = Run.path_for(local["out"], load(QUICKSTART, point["overrides"]))
        assert directory == local["out"] / point["run"] == local["out"] / row["run"]
        manifest = _manifest(directory)
        assert manifest["status"] == "finished" and "resumed" not in manifest
        assert manifest["command"][:3] == ["neuroplastic", "run", str(QUICKSTART)]
        assert [manifest["command"][i + 1] for i, a in enumerate(manifest["command"]) if a == "--set"] \
            == point["overrides"]
        summary = json.loads((directory / "summary.json").read_text())
        assert row["status"] == "finished" and row["error"] == ""
        assert float(row["probe/1"]) == summary["probe"]["1"] and 0 < summary["probe"]["1"] <= 1
        loss = [r["value"] for r in read_metrics(directory) if r["stage"] == "train" and r["name"] == "loss"]
        assert float(row["loss/1"]) == loss[-1] and math.isfinite(loss[-1])
        assert float(row["elapsed_s"]) == manifest["elapsed_s"] > 0
        assert (directory / "summary.png").is_file()
    table = local["stdout"]
    assert "probe/1" in table and "4 of 4 points finished" in table
    assert "%|" not in local["stderr"], "--quiet: no progress bar"


def test_points_run_in_parallel_one_process_each_with_one_blas_thread(local):
    sweep_dir = local["plan"].directory
    starts = [_events(sweep_dir, i, "start") for i in range(4)]
    finishes = [_events(sweep_dir, i, "finish") for i in range(4)]
    assert all(len(s) == 1 for s in starts) and all(len(f) == 1 for f in finishes)
    assert len({s[0]["pid"] for s in starts}) == 4 and os.getpid() not in {s[0]["pid"] for s in starts}
    assert all(s[0]["blas_threads"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                        "MKL_NUM_THREADS": "1"} for s in starts)
    first_two = sorted(range(4), key=lambda i: starts[i][0]["t"])[:2]
    assert starts[first_two[1]][0]["t"] < finishes[first_two[0]][0]["t"], "two points ran at the same time"


def test_a_point_gives_the_same_result_as_neuroplastic_run(local, tmp_path):
    point = json.loads((local["plan"].directory / "points.json").read_text())[3]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(QUICKSTART), "--out", str(tmp_path), "--quiet", *set_args(point["overrides"])]) == 0
    ours = json.loads((local["out"] / point["run"] / "summary.json").read_text())
    theirs = json.loads((tmp_path / point["run"] / "summary.json").read_text())
    assert ours == theirs
    ours, theirs = (root / point["run"] / "metrics.csv" for root in (local["out"], tmp_path))
    assert ours.read_bytes() == theirs.read_bytes()


def test_rerunning_a_finished_sweep_runs_nothing(local):
    sweep_dir = local["plan"].directory
    before = len(read_events(sweep_dir))
    stale = sweep_dir / ".summary.csv.k1ll3d.tmp"           # what a sweep killed while writing its summary leaves
    stale.write_text("point,seed\n0,")
    stamps = {d: (d / "manifest.json").stat().st_mtime_ns for d in local["out"].glob("clapp_digits-??????????")}
    code, stdout, _ = _sweep(local["out"], local["grid"], TINY, "--workers", "2")
    assert code == 0
    assert len(read_events(sweep_dir)) == before, "no point was started, not even to be skipped"
    assert {d: (d / "manifest.json").stat().st_mtime_ns for d in stamps} == stamps
    assert "4 of 4 points finished (4 before this command)" in stdout
    assert all(r["status"] == "finished" for r in _summary(sweep_dir))
    assert not stale.exists() and not list(sweep_dir.glob("*.tmp"))


def test_the_same_sweep_runs_in_one_command_at_a_time(local):
    from neuroplastic.sweep.summary import sweep_lock

    sweep_dir = local["plan"].directory
    before = read_events(sweep_dir), (sweep_dir / "summary.csv").read_bytes()
    lock = sweep_lock(sweep_dir, ["neuroplastic", "sweep", "elsewhere"])
    assert lock.acquire() is None
    try:
        code, stdout, _ = _sweep(local["out"], local["grid"], TINY, "--workers", "2")
    finally:
        lock.release()
    assert code == 1
    assert f"this sweep is being run by process {os.getpid()} on " in stdout and "(neuroplastic sweep elsewhere)" in stdout
    assert (read_events(sweep_dir), (sweep_dir / "summary.csv").read_bytes()) == before, "nothing written"


def test_a_sweep_directory_outside_out_is_refused(tmp_path):
    import dataclasses

    from neuroplastic.errors import SweepError
    from neuroplastic.sweep import sweep

    p = plan(QUICKSTART, ["seed=1"], TINY, tmp_path / "runs")
    bad = dataclasses.replace(p, base=dataclasses.replace(p.base, name="../escape"))
    with pytest.raises(SweepError, match="is not inside --out"):
        sweep(bad, progress=False, echo=lambda *a: None)
    assert not any(tmp_path.iterdir()), "nothing written, inside or outside --out"


# -- a point that another process is running ------------------------------------------------------------
def test_run_point_reports_a_point_busy_elsewhere_and_does_not_run_it(tmp_path, monkeypatch):
    """The contract with the results store: Run.open raises RunBusy while another process runs the point."""
    from neuroplastic import runner
    from neuroplastic.errors import RunBusy
    from neuroplastic.sweep import run_point

    def busy(*args, **kwargs):
        raise RunBusy("clapp_digits-0123456789: in use by process 4242 on elsewhere (neuroplastic run ...)")

    monkeypatch.setattr(runner, "run_protocol", busy)
    p = plan(QUICKSTART, ["seed=1"], TINY, tmp_path)
    p.directory.mkdir(parents=True)
    task = {"point": 0, "run": p.points[0].run_name, "protocol_file": str(QUICKSTART),
            "overrides": list(p.points[0].overrides), "out": str(tmp_path), "sweep_dir": str(p.directory),
            "command": ["neuroplastic", "run"]}
    row = run_point(task)
    assert row["status"] == "busy" and "in use by process 4242" in row["error"]
    assert [e["event"] for e in read_events(p.directory)] == ["start", "busy"]


def test_a_sweep_leaves_a_point_locked_by_another_process_to_it(tmp_path):
    """Passes once run directories are locked (Run.open raises RunBusy)."""
    grid = ["seed=1..2"]
    p = plan(QUICKSTART, grid, TINY, tmp_path)
    held = Run.open(tmp_path, p.points[0].protocol, command=["neuroplastic", "run", "elsewhere"])
    try:
        code, stdout, _ = _sweep(tmp_path, grid, TINY, "--workers", "2")
    finally:
        held.close()
    rows = _summary(p.directory)
    assert code == 1 and [r["status"] for r in rows] == ["busy", "finished"]
    assert f"in use by process {os.getpid()} " in rows[0]["error"]
    assert "point 0 (seed=1) is being run by another process: " in stdout
    assert "run the sweep again when it has finished" in stdout
    assert "1 of 2 points finished (0 before this command), 0 failed, 1 being run by another process" in stdout
    assert [e["event"] for e in read_events(p.directory) if e["point"] == 0] == ["start", "busy"]
    assert _manifest(tmp_path / rows[0]["run"])["status"] == "running", "the holder's run is left alone"

    code, stdout, _ = _sweep(tmp_path, grid, TINY, "--workers", "2")      # its holder is gone: now it runs
    assert code == 0 and all(r["status"] == "finished" for r in _summary(p.directory))


# -- failures --------------------------------------------------------------------------------------------
def test_failed_points_are_recorded_and_the_others_finish(tmp_path):
    # Adam with lr = 1e38 does not diverge (its steps are normalised: the units just die); plain SGD does.
    # A patch of 16 pixels is valid TOML and a valid [stimulus] patch, but larger than the 8x8 digits:
    # only the data check inside the point finds it, before its run directory exists.
    grid, sets = ["stimulus.patch=4,16", "rule.lr=1e-3,1e38"], [*TINY, 'rule.optimizer="sgd"']
    code, stdout, _ = _sweep(tmp_path, grid, sets, "--workers", "2")
    sweep_dir = plan(QUICKSTART, grid, sets, tmp_path).directory
    rows = _summary(sweep_dir)
    assert code == 1
    assert [r["status"] for r in rows] == ["finished", "failed", "failed", "failed"]
    assert "NaN or infinite" in rows[1]["error"] and "Lower [rule] lr" in rows[1]["error"]
    assert _manifest(tmp_path / rows[1]["run"])["status"] == "failed", "the diverged run keeps its checkpoint"
    for r in rows[2:]:
        assert "[stimulus] patch = 16 is larger than the images" in r["error"]
        assert not (tmp_path / r["run"]).exists()
    assert 0 < float(rows[0]["probe/1"]) <= 1
    assert "1 of 4 points finished" in stdout and "3 failed" in stdout and "point 2 (stimulus.patch=16" in stdout

    # Run again: only the failed points are attempted; the diverged one resumes from its checkpoint.
    code, _, _ = _sweep(tmp_path, grid, sets, "--workers", "2")
    assert code == 1
    assert [len(_events(sweep_dir, i, "start")) for i in range(4)] == [1, 2, 2, 2]
    assert [e["resume"] for e in _events(sweep_dir, 1, "start")] == [False, True]
    assert _manifest(tmp_path / rows[1]["run"])["resumed"] == 1


def _kill_when_checkpointed(sweep_dir: Path, run_dir: Path, point: int, epoch: int = 2, timeout: float = 90):
    """Start a thread that SIGKILLs the process running ``point`` once its run has checkpointed ``epoch``."""
    killed: dict = {}

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = _events(sweep_dir, point, "start") if sweep_dir.is_dir() else []
            done = sorted((run_dir / "checkpoints").glob("epoch_*.npz"))
            if _events(sweep_dir, point, "finish") if sweep_dir.is_dir() else False:
                killed["error"] = "the point finished before it could be killed"
                return
            if starts and done and int(done[-1].stem.split("_")[1]) >= epoch:
                os.kill(starts[0]["pid"], signal.SIGKILL)
                killed.update(pid=starts[0]["pid"], epoch=int(done[-1].stem.split("_")[1]))
                return
            time.sleep(0.005)
        killed["error"] = "timed out"

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def _assert_resumed_not_restarted(run_dir: Path, epochs: int) -> None:
    manifest = _manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["resumed"] == 1
    train = [r["epoch"] for r in read_metrics(run_dir)
             if r["stage"] == "train" and r["name"] == "loss" and r["layer"] == 1]
    assert train == list(range(1, epochs + 1)), "each epoch trained once: continued from the checkpoint"


def test_a_killed_local_worker_fails_only_its_point_which_resumes_on_rerun(tmp_path):
    grid = ["seed=1..3"]
    p = plan(QUICKSTART, grid, LONG, tmp_path)
    victim = tmp_path / p.points[0].run_name
    thread, killed = _kill_when_checkpointed(p.directory, victim, point=0)
    code, stdout, _ = _sweep(tmp_path, grid, LONG, "--workers", "2")
    thread.join()
    assert "pid" in killed, killed
    rows = _summary(p.directory)
    assert code == 1 and [r["status"] for r in rows] == ["failed", "finished", "finished"]
    assert "killed by SIGKILL" in rows[0]["error"]
    manifest = _manifest(victim)
    assert manifest["status"] == "failed" and "killed by SIGKILL" in manifest["error"]
    assert len(_events(p.directory, 0, "died")) == 1

    code, _, _ = _sweep(tmp_path, grid, LONG, "--workers", "2")
    assert code == 0 and all(r["status"] == "finished" for r in _summary(p.directory))
    assert [len(_events(p.directory, i, "start")) for i in range(3)] == [2, 1, 1]
    assert _events(p.directory, 0, "start")[1]["resume"] is True
    _assert_resumed_not_restarted(victim, 30)


# -- dask ------------------------------------------------------------------------------------------------
def test_dask_cluster_survives_a_killed_worker_without_losing_or_repeating_points(tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = ["seed=1..3"]
    p = plan(QUICKSTART, grid, LONG, tmp_path)
    victim = tmp_path / p.points[0].run_name
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster:
        thread, killed = _kill_when_checkpointed(p.directory, victim, point=0)
        code, stdout, stderr = _sweep(tmp_path, grid, LONG, "--scheduler", cluster.scheduler_address)
        thread.join()
    assert "pid" in killed, killed
    assert code == 0, stdout + stderr
    rows = _summary(p.directory)
    assert all(r["status"] == "finished" for r in rows), rows
    events = read_events(p.directory)
    for i in range(3):
        starts, finishes = _events(p.directory, i, "start"), _events(p.directory, i, "finish")
        assert len(finishes) == 1, f"point {i} finished once"
        # no start after the finish: a task dask re-runs after it finished only reads the finished run
        assert all(e["event"] == "skip" for e in events if e["point"] == i and e["t"] > finishes[0]["t"])
        if i == 0:
            assert [s["resume"] for s in starts] == [False, True] and starts[0]["pid"] == killed["pid"]
            assert starts[1]["pid"] != killed["pid"]
        else:
            assert len(starts) == 1 and starts[0]["resume"] is False
            assert "resumed" not in _manifest(tmp_path / rows[i]["run"])
    _assert_resumed_not_restarted(victim, 30)
