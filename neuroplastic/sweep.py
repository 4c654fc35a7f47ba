"""Parameter sweeps: the product of ``--grid`` axes, every point an ordinary run in the results store.

``neuroplastic sweep P --grid rule.lr=1e-3,3e-4 --grid seed=1..5`` runs the 10 protocols
``P --set rule.lr=... --set seed=...``. Each point goes through :func:`neuroplastic.runner.run_protocol`,
the body of ``neuroplastic run``: its run directory, manifest, checkpoints and hash are exactly
those of the equivalent ``neuroplastic run`` (whose command line the manifest records), so a point
can be inspected, resumed or re-run on its own. The sweep adds ``<out>/<name>-sweep-<hash10>/``
(hash of the resolved protocol and the grid) holding

- ``points.json``: a list of the points: grid values, overrides and run directory (relative to
  ``<out>``, the sweep directory's parent), written before anything runs; ``sweep.json``: the
  protocol file, ``--set`` overrides, grid and command line;
- ``summary.csv``: one row per point (grid values, status, final probe accuracies and train
  losses per layer, elapsed time, run directory, error), rewritten atomically as points end;
- ``events.jsonl``: one line per attempt (``start``, ``finish``, ``fail``, ``skip``, ``died``)
  with host, pid and time, appended by the processes that ran them: which worker ran what, and
  how often.

**Idempotent points.** A point whose run directory says ``finished`` is never run again: the
command checks before submitting, and the worker checks again before starting (a task that dask
re-executes after a worker died, or whose finished result was lost with the worker, reads the
finished run instead of training it twice). An unfinished point (``running`` after a crash,
``failed``) is resumed from its last checkpoint. Re-running a sweep command therefore runs only
what is missing, failed or unfinished. Running the *same* sweep twice at the same time is not
supported: both would resume the same unfinished runs.

**Local pool: one fresh process per point.** Points run in processes forked from a
``multiprocessing`` fork server that has imported numpy, scikit-learn and matplotlib once, so a
point starts in a fraction of a second instead of paying 2-3 s of imports, and still gets a
clean process: Brian2's device and preferences are global per process, and a point can leave
them in any state. This is neither ``concurrent.futures.ProcessPoolExecutor`` nor a dask
``LocalCluster``: when one worker of a ProcessPoolExecutor dies (SIGKILL, out of memory) the pool
is broken and *every* pending point fails with it; here a dead process is attributed to exactly
its point (recorded, its run marked failed, resumable) and the others go on. A LocalCluster would
do that too, but needs the optional dask and a scheduler for what a process per point does.
BLAS/OpenMP threads: the fork server and its children start with ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to ``threads`` (1 by default) *before* numpy
is imported, so ``--workers 2`` on 2 cores runs 2 threads, not 4.

**Dask** (``--scheduler ADDRESS``, ``pip install neuroplastic[sweep]``): each point is a task
running :func:`run_point` in a worker process. A module lock runs one point at a time per worker
process, since Brian2's global device is not thread-safe (start workers with ``--nthreads 1``
to not leave threads idle). BLAS threads are the workers' own: dask's nanny starts workers with
``OMP_NUM_THREADS=1`` etc. (``distributed.nanny.pre-spawn-environ``). When a worker dies, dask
re-runs its task elsewhere, which resumes the run from its checkpoint; a point whose workers
keep dying fails with ``KilledWorker`` (``distributed.scheduler.allowed-failures``). ``--out`` and
the protocol file must be on a file system that the client and every worker see at the same path.

**Brian2 builds shared by points.** Points that differ only in ``run_args`` values (seed,
learning rate, initial weights, stimulus) share one cached build (``neuroplastic.brian.device``).
What keeps concurrent points apart: code generation and compilation happen under the build's file
lock; Brian rewrites only the sources whose content changed (``main.cpp`` bakes in build-time
values such as the learning rate, so a point's build may relink ``main``: the linker writes a
new file, and binaries already running keep the old one); each run writes its results into its
own ``results_<pid>_<uuid>`` folder; run-argument arrays are files named by the hash of their
content, written once under a lock. A running binary holds a shared lock on ``<build>.run.lock``,
so a process (re)building the project, which rewrites ``static_arrays/`` in place, waits until no
binary of that build runs; and a finished run deletes its run-argument files only when no other
process holds the build (another point with identical arrays may be about to read them).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator

from .protocol import Protocol, ProtocolError, _check_names, load, parse_override
from .errors import SweepError
from .results import Run, atomic_write, read_metrics

__all__ = ["Axis", "Plan", "SweepError", "add_arguments", "command", "parse_grid", "plan", "run_point", "sweep"]

#: Environment variables that fix the number of BLAS/OpenMP threads when numpy is imported.
BLAS_THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Imported once by the fork server, so that every point's process starts with them loaded.
PRELOAD = ["neuroplastic.sweep", "neuroplastic.runner", "neuroplastic.rate.engine", "neuroplastic.plots",
           "neuroplastic.evaluate", "sklearn.datasets", "sklearn.linear_model", "sklearn.pipeline"]

_RANGE = re.compile(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*")
_NUMERIC_RANGE = re.compile(r"\s*[-+0-9.eE]+\.\.[-+0-9.eE]+\s*")     # e.g. 1.5..3: a range, but not of integers




# -- the grid ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """One ``--grid`` axis: a protocol key and its values, each as TOML text (what ``--set key=`` takes)."""

    key: str
    texts: tuple[str, ...]

    def overrides(self) -> list[str]:
        return [f"{self.key}={t}" for t in self.texts]


def parse_grid(item: str) -> Axis:
    """Parse ``'rule.lr=1e-3,3e-4'`` or ``'seed=1..5'`` (inclusive) into an :class:`Axis`.

    Values are separated by commas outside brackets and quotes (``model.layers=[8],[8,8]``);
    each is a TOML value, else a string, as with ``--set``; ``a..b`` is the integers a to b.
    Unknown keys and malformed values raise :class:`ProtocolError` naming the key; whether each
    value is allowed is checked against the protocol by :func:`plan`.
    """
    if "=" not in item:
        raise ProtocolError("--grid", "", f"{item!r} must have the form table.key=v1,v2,... or "
                            "table.key=a..b (e.g. rule.lr=1e-3,3e-4 or seed=1..5)")
    key, text = (s.strip() for s in item.split("=", 1))
    table, _, name = key.rpartition(".")
    _check_names({table: {name: text}} if table else {name: text}, "--grid")
    texts: list[str] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise ProtocolError("--grid", key, f"= {text!r}: an empty value; give values separated by commas "
                                "(e.g. 1e-3,3e-4) or an integer range a..b (e.g. 1..5)")
        m = _RANGE.fullmatch(part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ProtocolError("--grid", key, f"= {part.strip()}: the range a..b needs a <= b "
                                    f"(it includes both ends, e.g. {b}..{a})")
            texts.extend(str(i) for i in range(a, b + 1))
        elif _NUMERIC_RANGE.fullmatch(part):
            raise ProtocolError("--grid", key, f"= {part.strip()}: a range a..b takes integers (e.g. 1..5)")
        else:
            texts.append(part.strip())
    seen: dict[str, str] = {}
    for t in texts:
        value = json.dumps(parse_override(f"{key}={t}")[2], sort_keys=True, default=str)
        if value in seen:
            raise ProtocolError("--grid", key, f"= {text}: the value {t} is given twice (as {seen[value]} "
                                f"and {t}); each point must be a different run")
        seen[value] = t
    return Axis(key, tuple(texts))


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


@dataclass(frozen=True)
class Point:
    """One grid point: its grid values (TOML text), the overrides that make it, and its protocol."""

    index: int
    values: dict[str, str]
    overrides: tuple[str, ...]
    protocol: Protocol

    @property
    def run_name(self) -> str:
        return Run.path_for("", self.protocol).name

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass(frozen=True)
class Plan:
    """A validated sweep: the protocol (with ``--set``), the axes and every point, before anything runs."""

    protocol_file: Path
    base: Protocol
    sets: tuple[str, ...]
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    out: Path

    def digest(self) -> str:
        """Hash of the resolved protocol and the grid: the identity of the sweep."""
        grid = [[a.key, [parse_override(o)[2] for o in a.overrides()]] for a in self.axes]
        blob = json.dumps({"protocol": self.base.digest(), "grid": grid}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def directory(self) -> Path:
        return self.out / f"{self.base.name}-sweep-{self.digest()[:10]}"


def plan(protocol_file: str | Path, grid: list[str], sets: list[str] | None = None,
         out: str | Path = "runs") -> Plan:
    """Validate the protocol, the ``--set`` overrides, every grid value and every point; run nothing.

    A bad key or value raises :class:`ProtocolError` naming the ``--grid`` key and what is allowed.
    """
    sets = list(sets or [])
    base = load(protocol_file, sets)
    if not grid:
        raise ProtocolError("--grid", "", "a sweep needs at least one --grid axis, e.g. --grid seed=1..5")
    axes = [parse_grid(g) for g in grid]
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ProtocolError("--grid", twice, "is given twice; give all its values in one --grid "
                            f"(e.g. --grid {twice}=a,b,c)")
    set_keys = {".".join(filter(None, parse_override(s)[:2])) for s in sets}
    if both := sorted(set_keys & set(keys)):
        raise ProtocolError("--grid", both[0], "is given with both --set and --grid; keep one")
    for axis in axes:                      # each value alone, so the error names the key and the value
        for override in axis.overrides():
            try:
                base.with_overrides([override])
            except ProtocolError as err:
                raise _regrid(err, f"--grid {axis.key}") from None
    points, seen = [], {}
    for index, combo in enumerate(itertools.product(*(a.overrides() for a in axes))):
        values = {a.key: o.split("=", 1)[1] for a, o in zip(axes, combo)}
        try:
            protocol = base.with_overrides(list(combo))
        except ProtocolError as err:       # keys that must agree, e.g. [evaluate] layers and [model] layers
            raise _regrid(err, f"--grid point {' '.join(combo)}") from None
        point = Point(index, values, (*sets, *combo), protocol)
        if (other := seen.get(protocol.digest())) is not None:
            raise ProtocolError("--grid", "", f"points {other.label()!r} and {point.label()!r} are the same "
                                f"protocol (run {point.run_name}); remove one of the values")
        seen[protocol.digest()] = point
        points.append(point)
    return Plan(Path(protocol_file).resolve(), base, tuple(sets), tuple(axes), tuple(points), Path(out).resolve())


def _regrid(err: ProtocolError, source: str) -> ProtocolError:
    """The same validation error, attributed to the --grid value that caused it."""
    detail = str(err)[len(err.source) + 2:] if str(err).startswith(f"{err.source}: ") else str(err)
    new = ProtocolError(source, "", f"{detail} ({err.source})")
    new.key = err.key
    return new


# -- one point, in a worker process --------------------------------------------------------------
_ONE_POINT_AT_A_TIME = threading.Lock()


def run_state(directory: Path) -> str | None:
    """``None`` (no run yet), the manifest's status (``running``, ``finished``, ``failed``) or ``"invalid"``."""
    manifest = Path(directory) / "manifest.json"
    if not Path(directory).exists():
        return None
    try:
        return json.loads(manifest.read_text()).get("status", "invalid")
    except (OSError, json.JSONDecodeError):
        return "invalid"


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep point (a task from :func:`sweep`) unless its run already finished; return its row.

    Every failure is caught and returned as ``status = "failed"`` with its message, so one point
    never stops the others. Safe to execute again for the same point (see the module docs).
    """
    from .brian.device import DeviceError
    from .models import ModelError
    from .results import RunError
    from .runner import run_protocol

    with _ONE_POINT_AT_A_TIME:
        directory = Path(task["out"]) / task["run"]
        try:
            protocol = load(task["protocol_file"], task["overrides"])
        except (ValueError, ModelError) as err:     # e.g. a worker that does not see the protocol file
            _event(task, "fail", error=str(err))
            return _row(task, directory, str(err))
        if Run.path_for(task["out"], protocol) != directory:
            error = (f"this worker resolves the point to run {Run.path_for('', protocol).name}, not {task['run']}: "
                     "it resolves the protocol differently (another version of neuroplastic?)")
            _event(task, "fail", error=error)
            return _row(task, directory, error)
        if run_state(directory) == "finished":
            _event(task, "skip")
            return _row(task, directory)
        resume = directory.exists()
        _event(task, "start", resume=resume, blas_threads={k: os.environ.get(k) for k in BLAS_THREADS_ENV})
        error, trace = None, None
        try:
            outcome = run_protocol(protocol, task["out"], resume=resume, progress=False, command=task["command"])
            error = outcome.error
        except (ValueError, ModelError, RunError, DeviceError) as err:   # input errors, before training
            error = str(err)
        except Exception as err:
            error, trace = f"{type(err).__name__}: {err}", traceback.format_exc()
        _event(task, "finish" if error is None else "fail", error=error, traceback=trace)
        return _row(task, directory, error)


def _row(task: dict[str, Any], directory: Path, error: str | None = None) -> dict[str, Any]:
    """A point's result as read back from its run directory (which may not exist)."""
    manifest = _read_json(directory / "manifest.json") or {}
    summary = _read_json(directory / "summary.json") or {}
    losses = [r for r in read_metrics(directory) if r["stage"] == "train" and r["name"] == "loss"]
    last = max((r["epoch"] for r in losses), default=None)
    finished = error is None and manifest.get("status") == "finished"
    return {"point": task["point"], "status": "finished" if finished else "failed", "run": task["run"],
            "probe": summary.get("probe", {}), "probe_random": summary.get("probe_random", {}),
            "loss": {str(r["layer"]): r["value"] for r in losses if r["epoch"] == last},
            "elapsed_s": manifest.get("elapsed_s"),
            "error": None if finished else (error or manifest.get("error") or f"run is {manifest.get('status')}")}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _event(task: dict[str, Any], event: str, **fields) -> None:
    """Append one line to the sweep's ``events.jsonl`` (a single O_APPEND write: lines never interleave)."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "t": time.time(), "point": task["point"],
              "event": event, "run": task["run"], "host": socket.gethostname(), "pid": os.getpid(),
              **{k: v for k, v in fields.items() if v is not None}}
    fd = os.open(Path(task["sweep_dir"]) / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(record, default=str) + "\n").encode())
    finally:
        os.close(fd)


def read_events(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a sweep's ``events.jsonl``, oldest first."""
    path = Path(sweep_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


# -- local pool ------------------------------------------------------------------------------------
_SERVER_THREADS: int | None = None


@contextlib.contextmanager
def _blas_threads(threads: int):
    """Set the BLAS/OpenMP thread variables while a child process (or the fork server) starts."""
    saved = {k: os.environ.get(k) for k in BLAS_THREADS_ENV}
    os.environ.update({k: str(threads) for k in BLAS_THREADS_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _context(threads: int):
    """The fork-server context (spawn where there is none); its server's BLAS threads are fixed at its start."""
    global _SERVER_THREADS
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    if _SERVER_THREADS is None:
        ctx.set_forkserver_preload(PRELOAD)
        with _blas_threads(threads):
            from multiprocessing import forkserver

            forkserver.ensure_running()
        _SERVER_THREADS = threads
    elif _SERVER_THREADS != threads:
        raise SweepError(f"this Python process already started its worker processes with {_SERVER_THREADS} "
                         f"BLAS thread(s); it cannot switch to --threads {threads} (start a new process)")
    return ctx


def _child(task: dict[str, Any], conn) -> None:
    try:
        row = run_point(task)
    except BaseException as err:                  # Ctrl-C before the run existed, or a bug in run_point
        row = {"point": task["point"], "status": "failed", "run": task["run"],
               "error": "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"}
    conn.send(row)
    conn.close()


def _local(tasks: list[dict[str, Any]], workers: int, threads: int) -> Iterator[dict[str, Any]]:
    """Run each task in its own process, ``workers`` at a time; yield each row as its process ends."""
    if not tasks:
        return
    ctx = _context(threads)
    pending, running = deque(tasks), {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                task = pending.popleft()
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(task, send), name=f"neuroplastic-point-{task['point']}",
                                   daemon=True)
                with _blas_threads(threads):
                    proc.start()
                send.close()
                running[recv] = (task, proc)
            for conn in wait(list(running)):      # readable: a row arrived, or the process died (EOF)
                task, proc = running.pop(conn)
                try:
                    row = conn.recv()
                except EOFError:
                    row = None
                conn.close()
                proc.join()
                yield row if row is not None else _died(task, proc.exitcode)
    finally:                                      # interrupted: let the points record it, then stop them
        for conn, (task, proc) in running.items():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            conn.close()


def _died(task: dict[str, Any], exitcode: int | None) -> dict[str, Any]:
    """Record a point whose process ended without a result: in its manifest, the sweep log and its row."""
    how = (f"killed by {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
           else f"exit code {exitcode}")
    error = f"the point's process died ({how}; out of memory?); re-run the sweep to resume it"
    directory = Path(task["out"]) / task["run"]
    if run_state(directory) == "running":
        Run.load(directory).fail(error)
    _event(task, "died", error=error, exitcode=exitcode)
    return _row(task, directory, error)


# -- dask ----------------------------------------------------------------------------------------
def _dask(address: str):
    """A client of the dask scheduler at ``address`` (dask is imported here, and only here)."""
    try:
        from distributed import Client
    except ImportError as err:
        raise SweepError(f"--scheduler needs dask.distributed, which is not installed ({err}); "
                         "install it with: pip install neuroplastic[sweep]") from None
    try:
        return Client(address)      # waits distributed.comm.timeouts.connect (dask config; 30 s by default)
    except (OSError, TimeoutError) as err:
        raise SweepError(f"--scheduler {address}: cannot connect to a dask scheduler there ({err})") from None


def _on_dask(client, tasks: list[dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
    """Submit each task to the cluster; yield each row as its task ends."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    with client:
        futures = {client.submit(run_point, t, key=f"{name}-point-{t['point']}-{token}", pure=False): t
                   for t in tasks}
        for future in as_completed(list(futures)):
            task = futures.pop(future)
            try:
                row = future.result()
            except Exception as err:              # KilledWorker after repeated worker deaths, or lost data
                error = f"{type(err).__name__}: {err}"
                _event(task, "died", error=error)
                row = _row(task, Path(task["out"]) / task["run"], error)
            future.release()                      # its result is read: dask need not keep (or recompute) it
            yield row


# -- the sweep ------------------------------------------------------------------------------------
def sweep(p: Plan, *, workers: int | None = None, scheduler: str | None = None, threads: int = 1,
          progress: bool = True, command: list[str] | None = None, echo=print) -> int:
    """Run every point of ``p`` that has not finished; write and print the summary; return the exit code.

    0 every point finished; 1 some point failed (the others ran to their end); 130 interrupted.
    """
    from tqdm.auto import tqdm

    client = _dask(scheduler) if scheduler is not None else None     # fail before writing anything
    directory = p.directory
    directory.mkdir(parents=True, exist_ok=True)
    _write_points(p, command)
    rows: dict[int, dict[str, Any]] = {}
    tasks = []
    for point in p.points:
        task = {"point": point.index, "run": point.run_name, "protocol_file": str(p.protocol_file),
                "overrides": list(point.overrides), "out": str(p.out), "sweep_dir": str(directory),
                "command": ["neuroplastic", "run", str(p.protocol_file),
                            *(a for o in point.overrides for a in ("--set", o)), "--out", str(p.out)]}
        if run_state(p.out / point.run_name) == "finished":
            rows[point.index] = _row(task, p.out / point.run_name)
        else:
            tasks.append(task)
    done_before = len(rows)
    workers = max(1, min(workers or _cpus(), len(tasks))) if scheduler is None else None
    if progress:
        echo(f"sweep directory: {directory}")
        echo(f"{len(p.points)} points: {done_before} already finished, {len(tasks)} to run "
             + (f"on {workers} local worker(s)" if scheduler is None else f"on the dask scheduler {scheduler}"))
    bar = tqdm(total=len(p.points), initial=done_before, disable=not progress, desc=p.base.name, unit="point")
    failed, code = 0, 0
    bar.set_postfix(failed=failed)
    results = _local(tasks, workers, threads) if client is None else _on_dask(client, tasks, p.base.name)
    try:
        for row in results:
            rows[row["point"]] = row
            failed += row["status"] != "finished"
            bar.update()
            bar.set_postfix(failed=failed)
            _write_summary(p, rows)
    except KeyboardInterrupt:
        code = 130
    finally:
        results.close()                   # interrupted: stops the local processes (or the client) now
        bar.close()
    _write_summary(p, rows)
    echo(summary_table(p, rows))
    for index, row in sorted(rows.items()):
        if row["status"] != "finished":
            echo(f"point {index} ({p.points[index].label()}) failed: {row['error']}")
    n_finished = sum(r["status"] == "finished" for r in rows.values())
    echo(f"{n_finished} of {len(p.points)} points finished ({done_before} before this command), "
         f"{failed} failed; summary: {directory / 'summary.csv'}")
    if code == 130:
        echo("interrupted; run the same command again to continue (finished points are not run again)")
        return 130
    return 1 if n_finished < len(p.points) else 0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _write_points(p: Plan, command: list[str] | None) -> None:
    """``points.json`` (a list: what ``neuroplastic compare`` reads) and ``sweep.json`` (how it was made)."""
    points = [{"point": pt.index, "grid": pt.values, "overrides": list(pt.overrides), "run": pt.run_name,
               "protocol_hash": pt.protocol.digest()} for pt in p.points]
    atomic_write(p.directory / "points.json", json.dumps(points, indent=2) + "\n")
    about = {"protocol_file": str(p.protocol_file), "name": p.base.name, "protocol_hash": p.base.digest(),
             "sweep_hash": p.digest(), "sets": list(p.sets), "grid": {a.key: list(a.texts) for a in p.axes},
             "command": command or sys.argv}
    atomic_write(p.directory / "sweep.json", json.dumps(about, indent=2) + "\n")


def _columns(p: Plan, rows: dict[int, dict[str, Any]]) -> list[str]:
    layers = {m: sorted({l for r in rows.values() for l in r.get(m, {})}, key=int)
              for m in ("probe", "probe_random", "loss")}
    return (["point", *(a.key for a in p.axes), "status"]
            + [f"{m}/{l}" for m in ("probe", "probe_random", "loss") for l in layers[m]]
            + ["elapsed_s", "run", "error"])


def _cells(p: Plan, index: int, row: dict[str, Any] | None) -> dict[str, Any]:
    row = row or {"status": "unfinished", "run": p.points[index].run_name}
    cells = {"point": index, **p.points[index].values, "status": row["status"], "run": row["run"],
             "elapsed_s": row.get("elapsed_s"), "error": row.get("error")}
    for m in ("probe", "probe_random", "loss"):
        cells.update({f"{m}/{l}": v for l, v in row.get(m, {}).items()})
    return cells


def _write_summary(p: Plan, rows: dict[int, dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(p, rows), lineterminator="\n")
    writer.writeheader()
    for pt in p.points:
        cells = _cells(p, pt.index, rows.get(pt.index))
        writer.writerow({k: ("" if v is None else v) for k, v in cells.items()})
    atomic_write(p.directory / "summary.csv", buf.getvalue())


def summary_table(p: Plan, rows: dict[int, dict[str, Any]]) -> str:
    """The summary as an aligned text table (errors are listed below it, in full)."""
    columns = [c for c in _columns(p, rows) if c != "error"]

    def fmt(v) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    body = [[fmt(_cells(p, pt.index, rows.get(pt.index)).get(c)) for c in columns] for pt in p.points]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------
def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {text!r}")
    return n


def add_arguments(s: argparse.ArgumentParser) -> None:
    """The options of ``neuroplastic sweep``."""
    s.add_argument("protocol", type=Path, help="protocol file (TOML)")
    s.add_argument("--grid", action="append", default=[], metavar="TABLE.KEY=V1,V2|A..B",
                   help="an axis of the grid: comma-separated TOML values or an integer range a..b "
                        "(inclusive), e.g. --grid rule.lr=1e-3,3e-4 --grid seed=1..5; the sweep runs "
                        "every combination (repeatable)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a protocol value for every point, e.g. --set train.epochs=5 (repeatable)")
    s.add_argument("--workers", type=_positive, help="local worker processes (default: the number of CPUs)")
    s.add_argument("--threads", type=_positive, help="BLAS/OpenMP threads per local worker (default 1)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the points on this dask.distributed scheduler (e.g. tcp://10.0.0.5:8786) "
                        "instead of local processes; needs pip install neuroplastic[sweep]")
    s.add_argument("--out", type=Path, default=Path("runs"), help="root of the run directories (default: runs)")
    s.add_argument("--quiet", action="store_true", help="no progress bar, only the summary table")


def command(args) -> int:
    """``neuroplastic sweep``: validate the whole grid, then run it."""
    if args.scheduler and (args.workers or args.threads):
        print("neuroplastic: error: --workers and --threads set up local workers; with --scheduler the "
              "cluster's workers are used as they are (dask's nanny gives each one BLAS thread)",
              file=sys.stderr)
        return 2
    p = plan(args.protocol, args.grid, args.overrides, args.out)
    try:
        return sweep(p, workers=args.workers, scheduler=args.scheduler, threads=args.threads or 1,
                     progress=not args.quiet, command=["neuroplastic", *args.argv])
    except SweepError as err:
        print(f"neuroplastic: error: {err}", file=sys.stderr)
        return 2
