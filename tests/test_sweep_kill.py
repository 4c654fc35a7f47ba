"""`neuroplastic sweep` killed for real: its points die with it, a re-run resumes them to the same bits,
and two sweeps sharing points never train one twice (each run directory is locked by its process)."""
from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.cli import main
from neuroplastic.results import read_metrics
from neuroplastic.sweep import plan, read_events

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"


def _long(epochs: int) -> list[str]:
    """~10-15 ms an epoch, a checkpoint each: a point is running for epochs/70 seconds or more."""
    return ["data.max_samples=600", "model.layers=[16,16]", "train.batch_size=16", f"train.epochs={epochs}",
            "evaluate.baseline=false"]


def _argv(out: Path, grid: list[str], sets: list[str], *extra: str) -> list[str]:
    return ["sweep", str(QUICKSTART), "--out", str(out), "--quiet", *(a for g in grid for a in ("--grid", g)),
            *(a for s in sets for a in ("--set", s)), *extra]


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("neuroplastic")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "neuroplastic.cli"]


def _start(argv: list[str]) -> subprocess.Popen:
    """The sweep command in its own process group (so that a failed test can still stop all of it)."""
    return subprocess.Popen([*_console_script(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _sweep(argv: list[str]) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    return code, stdout.getvalue()


@contextlib.contextmanager
def _stopped_at_the_end(procs: list[subprocess.Popen]):
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _newest_epoch(run_dir: Path) -> int:
    found = sorted((run_dir / "checkpoints").glob("epoch_*.npz"))
    return int(found[-1].stem.split("_")[1]) if found else -1


def _wait(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


# -- processes, from /proc ---------------------------------------------------------------------------
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children[int(stat[1])].append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.update(kids)
        todo += kids
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")         # a zombie has ended (its reaper may be slow)


# -- events ------------------------------------------------------------------------------------------
def _per_invocation(sweep_dir: Path, event: str) -> dict[int, collections.Counter]:
    """For each point, how many ``event`` records each invocation of the sweep command made."""
    counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in read_events(sweep_dir):
        if e["event"] == event:
            counts[e["point"]][e["invocation"]] += 1
    return counts


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


# -- 1. the sweep's points die with it ------------------------------------------------------------------
@needs_proc
def test_kill_9_of_the_sweep_stops_its_points_and_a_rerun_resumes_each_once(tmp_path):
    epochs = 150
    grid, sets = ["seed=1..2"], _long(epochs)
    p = plan(QUICKSTART, grid, sets, tmp_path)
    runs = [tmp_path / pt.run_name for pt in p.points]
    sweep = _start(_argv(tmp_path, grid, sets, "--workers", "2"))
    with _stopped_at_the_end([sweep]):
        _wait(lambda: all(_newest_epoch(r) >= 2 for r in runs), 60, "checkpoint of epoch 2 of both points", sweep)
        starts = [e for e in read_events(p.directory) if e["event"] == "start"]
        assert len(starts) == 2 and not any(e["event"] == "finish" for e in read_events(p.directory))
        processes = _descendants(sweep.pid) | {e["pid"] for e in starts}    # fork server, resource tracker, points
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=10)
        killed = time.monotonic()
        _wait(lambda: not any(map(_alive, processes)), 10, "end of every process of the killed sweep")
        print(f"every process of the sweep ended {time.monotonic() - killed:.2f} s after kill -9 of its parent")
    assert not [e for e in read_events(p.directory) if e["event"] == "finish"], \
        "the points were stopped with the sweep, not left to train to their end"

    for run_dir, start in zip(runs, sorted(starts, key=lambda e: e["point"])):
        # SIGTERM ended the point as Ctrl-C does: marked interrupted, checkpoints kept
        manifest = _manifest(run_dir)
        assert manifest["status"] == "failed" and manifest["error"] == "interrupted"
        assert _newest_epoch(run_dir) >= 2
        fails = [e for e in read_events(p.directory) if e["event"] == "fail" and e["run"] == run_dir.name]
        assert [(e["pid"], e["error"]) for e in fails] == [(start["pid"], "interrupted")]

    code, stdout = _sweep(_argv(tmp_path, grid, sets, "--workers", "2"))
    assert code == 0, stdout
    starts = _per_invocation(p.directory, "start")
    finishes = _per_invocation(p.directory, "finish")
    for point, run_dir in enumerate(runs):
        assert sorted(starts[point].values()) == [1, 1], "one start per invocation of the sweep command"
        assert sum(finishes[point].values()) == 1
        resumes = [e["resume"] for e in read_events(p.directory) if e["event"] == "start" and e["point"] == point]
        assert resumes == [False, True]
        manifest = _manifest(run_dir)
        assert manifest["status"] == "finished" and manifest["resumed"] == 1
        train = [r["epoch"] for r in read_metrics(run_dir)
                 if r["stage"] == "train" and r["name"] == "loss" and r["layer"] == 1]
        assert train == list(range(1, epochs + 1)), "each epoch trained once: continued from the checkpoint"


# -- 2. two sweeps sharing a point ---------------------------------------------------------------------
def test_two_sweeps_sharing_a_point_train_it_once(tmp_path):
    """Sweep A (seed 2, then 1) runs; sweep B (seed 2, then 3) runs while A trains seed 2: B leaves it to A.

    A's point is paused (SIGSTOP) while B runs, so that B meets it running however slow the machine is.
    """
    epochs = 60
    sets = _long(epochs)
    grid_a, grid_b = ["seed=2,1"], ["seed=2,3"]
    a_plan, b_plan = plan(QUICKSTART, grid_a, sets, tmp_path), plan(QUICKSTART, grid_b, sets, tmp_path)
    shared = tmp_path / a_plan.points[0].run_name
    assert shared.name == b_plan.points[0].run_name
    a = _start(_argv(tmp_path, grid_a, sets, "--workers", "1"))
    with _stopped_at_the_end([a]):
        _wait(lambda: _newest_epoch(shared) >= 1, 60, "checkpoint of the shared point", a)
        (holder,) = [e["pid"] for e in read_events(a_plan.directory) if e["event"] == "start" and e["point"] == 0]
        os.kill(holder, signal.SIGSTOP)
        try:
            code_b, out_b = _sweep(_argv(tmp_path, grid_b, sets, "--workers", "1"))
        finally:
            os.kill(holder, signal.SIGCONT)
        out_a, err_a = a.communicate(timeout=120)
        assert a.returncode == 0, out_a + err_a

    # B reported the shared point as run elsewhere (naming A's process), ran its own point, said to run it again
    assert code_b == 1, out_b
    assert "point 0 (seed=2) is being run by another process: " in out_b and f"process {holder} " in out_b
    assert "run the sweep again when it has finished" in out_b and "1 being run by another process" in out_b
    busy = [e for e in read_events(b_plan.directory) if e["event"] == "busy"]
    assert [e["point"] for e in busy] == [0] and "in use by process" in busy[0]["error"]
    rows = (b_plan.directory / "summary.csv").read_text()
    assert ",busy," in rows

    # the shared run was trained once, by A: one finish, no resume, every epoch once
    events = read_events(a_plan.directory) + read_events(b_plan.directory)
    assert [e["event"] for e in events if e["run"] == shared.name and e["event"] in ("finish", "fail", "died")] \
        == ["finish"]
    manifest = _manifest(shared)
    assert manifest["status"] == "finished" and "resumed" not in manifest
    train = [r["epoch"] for r in read_metrics(shared) if r["stage"] == "train" and r["name"] == "loss"
             and r["layer"] == 1]
    assert train == list(range(1, epochs + 1))

    # once A is done, running B again reads the shared point and runs nothing
    code_b, out_b = _sweep(_argv(tmp_path, grid_b, sets, "--workers", "1"))
    assert code_b == 0 and "2 of 2 points finished (2 before this command)" in out_b


# -- 3. a sweep killed at a random moment ----------------------------------------------------------------
def _arrays(path: Path) -> dict[str, tuple[str, tuple, bytes]]:
    with np.load(path) as data:
        return {k: (str(data[k].dtype), data[k].shape, data[k].tobytes()) for k in data.files}


@pytest.mark.slow          # ~15-25 s: three sweeps of three points
def test_a_sweep_killed_at_a_random_moment_resumes_to_the_same_bits(tmp_path):
    grid, sets = ["seed=1..3"], _long(60)
    p = plan(QUICKSTART, grid, sets, tmp_path / "killed")
    runs = [p.out / pt.run_name for pt in p.points]
    seed = random.randrange(2**32)
    delay = random.Random(seed).uniform(0, 1.5)
    print(f"random seed {seed}: killed {delay:.2f} s after the first checkpoint")
    sweep = _start(_argv(p.out, grid, sets, "--workers", "2"))
    with _stopped_at_the_end([sweep]):
        _wait(lambda: any(_newest_epoch(r) >= 1 for r in runs), 60, "first checkpoint", sweep)
        time.sleep(delay)
        os.killpg(sweep.pid, signal.SIGKILL)             # the sweep, its fork server and its points, at once
        sweep.wait(timeout=10)
    first = {e["invocation"] for e in read_events(p.directory)}
    assert len(first) == 1

    code, stdout = _sweep(_argv(p.out, grid, sets, "--workers", "2"))
    assert code == 0, stdout
    code, stdout = _sweep(_argv(tmp_path / "reference", grid, sets, "--workers", "2"))
    assert code == 0, stdout

    for run_dir in runs:
        reference = tmp_path / "reference" / run_dir.name
        assert _manifest(run_dir)["status"] == "finished"
        assert (run_dir / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
        assert _arrays(run_dir / "features.npz") == _arrays(reference / "features.npz")
    assert not list(p.out.rglob("*.tmp")), "no temporary file is left anywhere under --out"

    starts = _per_invocation(p.directory, "start")
    finishes = _per_invocation(p.directory, "finish")
    (second,) = {e["invocation"] for e in read_events(p.directory)} - first
    for point in range(3):
        assert set(starts[point]) <= first | {second}
        assert all(n == 1 for n in starts[point].values()), "at most one start per invocation"
        assert sum(finishes[point].values()) == 1, "finished once"
        if finishes[point][next(iter(first))]:
            assert not starts[point][second], "a point finished before the kill is not run again"
