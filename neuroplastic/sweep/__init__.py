"""Parameter sweeps: the product of ``--grid`` axes, every point an ordinary run in the results store.

``neuroplastic sweep P --grid rule.lr=1e-3,3e-4 --grid seed=1..5`` runs the 10 protocols
``P --set rule.lr=... --set seed=...``. Each point goes through :func:`neuroplastic.runner.run_protocol`,
the body of ``neuroplastic run``: its run directory, manifest, checkpoints and hash are exactly
those of the equivalent ``neuroplastic run`` (whose command line the manifest records), so a point
can be inspected, resumed or re-run on its own.

This module runs a sweep and is its command line; each part lives in its own module:

- :mod:`~neuroplastic.sweep.grid`: the ``--grid`` axes, the points and the hash naming the sweep;
- :mod:`~neuroplastic.sweep.point`: one point, run idempotently by whichever process gets it;
- :mod:`~neuroplastic.sweep.local`: the local pool, a fresh process per point;
- :mod:`~neuroplastic.sweep.cluster`: the points on a dask.distributed cluster;
- :mod:`~neuroplastic.sweep.summary`: the sweep directory (``points.json``, ``summary.csv``,
  ``events.jsonl``, its lock) and the printed table.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import SweepError
from ..results import check_root, remove_stale_temporaries
from .cluster import connect, run_on_dask
from .grid import Axis, Plan, Point, parse_grid, plan
from .local import run_local
from .point import run_point, run_state
from .summary import (invocation, point_row, read_events, summary_table, sweep_lock,
                      write_points, write_summary)

__all__ = ["Axis", "Plan", "SweepError", "add_arguments", "command", "parse_grid", "plan", "read_events",
           "run_point", "sweep"]


def sweep(p: Plan, *, workers: int | None = None, scheduler: str | None = None, threads: int = 1,
          progress: bool = True, command: list[str] | None = None, echo=print) -> int:
    """Run every point of ``p`` that has not finished; write and print the summary; return the exit code.

    0 every point finished; 1 some point failed (the others ran to their end), some point is being
    run by another process (``busy``: run the sweep again when that one has finished), or this very
    sweep is already running in another command; 130 interrupted.
    """
    from tqdm.auto import tqdm

    directory = _sweep_directory(p)
    check_root(p.out)
    client = connect(scheduler) if scheduler is not None else None     # fail before writing anything
    directory.mkdir(parents=True, exist_ok=True)
    lock = sweep_lock(directory, command)
    if (holder := lock.acquire()) is not None:
        echo(f"this sweep is being run by {holder}; run it again when that has finished "
             f"(sweep directory: {directory})")
        if client is not None:
            client.close()
        return 1
    try:
        return _sweep_locked(p, directory, workers, scheduler, client, threads, progress, command, echo, tqdm)
    finally:
        lock.release()


def _sweep_locked(p: Plan, directory: Path, workers, scheduler, client, threads, progress, command, echo,
                  tqdm) -> int:
    remove_stale_temporaries(directory)
    write_points(p, command)
    rows: dict[int, dict[str, Any]] = {}
    tasks = []
    this_run = invocation()
    for point in p.points:
        task = {"point": point.index, "run": point.run_name, "protocol_file": str(p.protocol_file),
                "overrides": list(point.overrides), "out": str(p.out), "sweep_dir": str(directory),
                "invocation": this_run,
                "command": ["neuroplastic", "run", str(p.protocol_file),
                            *(a for o in point.overrides for a in ("--set", o)), "--out", str(p.out)]}
        if run_state(p.out / point.run_name) == "finished":
            rows[point.index] = point_row(task, p.out / point.run_name)
        else:
            tasks.append(task)
    done_before = len(rows)
    workers = max(1, min(workers or _cpus(), len(tasks))) if scheduler is None else None
    if progress:
        echo(f"sweep directory: {directory}")
        echo(f"{len(p.points)} points: {done_before} already finished, {len(tasks)} to run "
             + (f"on {workers} local worker(s)" if scheduler is None else f"on the dask scheduler {scheduler}"))
    bar = tqdm(total=len(p.points), initial=done_before, disable=not progress, desc=p.base.name, unit="point")
    failed, busy, code = 0, 0, 0
    bar.set_postfix(failed=failed)
    results = run_local(tasks, workers, threads) if client is None else run_on_dask(client, tasks, p.base.name)
    try:
        for row in results:
            rows[row["point"]] = row
            failed += row["status"] == "failed"
            busy += row["status"] == "busy"
            bar.update()
            bar.set_postfix(failed=failed, **({"busy": busy} if busy else {}))
            write_summary(p, rows)
    except KeyboardInterrupt:
        code = 130
    finally:
        results.close()                   # interrupted: stops the local processes (or the client) now
        bar.close()
    write_summary(p, rows)
    echo(summary_table(p, rows))
    for index, row in sorted(rows.items()):
        if row["status"] == "busy":
            echo(f"point {index} ({p.points[index].label()}) is being run by another process: {row['error']}; "
                 "run the sweep again when it has finished")
        elif row["status"] != "finished":
            echo(f"point {index} ({p.points[index].label()}) failed: {row['error']}")
    n_finished = sum(r["status"] == "finished" for r in rows.values())
    echo(f"{n_finished} of {len(p.points)} points finished ({done_before} before this command), "
         f"{failed} failed" + (f", {busy} being run by another process" if busy else "")
         + f"; summary: {directory / 'summary.csv'}")
    if code == 130:
        echo("interrupted; run the same command again to continue (finished points are not run again)")
        return 130
    return 1 if n_finished < len(p.points) else 0


def _sweep_directory(p: Plan) -> Path:
    """``p.directory``, checked to be a directory right inside ``p.out`` (whatever the protocol's name)."""
    directory = p.directory
    inside = Path(os.path.abspath(directory)).parent == Path(os.path.abspath(p.out))
    if not inside or directory.name in ("", ".", ".."):
        raise SweepError(f"the sweep directory {directory} is not inside --out {p.out}: the protocol's name "
                         f"{p.base.name!r} must be a plain file name")
    if directory.is_symlink() or (directory.exists() and directory.resolve().parent != p.out.resolve()):
        raise SweepError(f"the sweep directory {directory} leads outside --out {p.out} (a symbolic link); "
                         "remove it or choose another --out")
    return directory


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
