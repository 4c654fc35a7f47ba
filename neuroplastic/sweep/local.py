"""The local pool: one fresh process per point, and a point whose process dies is attributed to that point alone.

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
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator

from ..errors import SweepError
from ..results import Run
from .point import BLAS_THREADS_ENV, run_point, run_state
from .summary import log_event, point_row

__all__ = ["PRELOAD", "run_local"]

#: Imported once by the fork server, so that every point's process starts with them loaded.
PRELOAD = ["neuroplastic.sweep", "neuroplastic.runner", "neuroplastic.engines.numpy.engine", "neuroplastic.plots",
           "neuroplastic.evaluate", "sklearn.datasets", "sklearn.linear_model", "sklearn.pipeline"]

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


def run_local(tasks: list[dict[str, Any]], workers: int, threads: int) -> Iterator[dict[str, Any]]:
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
    log_event(task, "died", error=error, exitcode=exitcode)
    return point_row(task, directory, error)
