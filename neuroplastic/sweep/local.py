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

**A point's process dies with the sweep.** However the sweep's process ends (Ctrl-C, ``kill -9``,
a closed terminal), its points stop within a moment instead of training on unseen (and being
trained again, concurrently, by the next run of the sweep). Each point's process holds the read
end of a *lifeline* pipe whose only write end is the sweep's: a thread in the point waits on it and
sees end-of-file when the sweep's process is gone, on every platform. On Linux the point also asks
the kernel for ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``); its parent is the fork
server, which the point detaches from so that it exits with the sweep. Either way the point gets
``SIGTERM``, which ends its run the way Ctrl-C does: marked failed ("interrupted"), checkpoints
kept, resumed by the next run of the sweep. A point that does not stop within
:data:`STOP_GRACE_S` seconds of that is ended outright.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator

from ..environ import environment
from ..errors import SweepError
from ..results import Run
from .point import BLAS_THREADS_ENV, run_point, run_state
from .summary import log_event, point_row

__all__ = ["PRELOAD", "STOP_GRACE_S", "run_local"]

#: Imported once by the fork server, so that every point's process starts with them loaded.
PRELOAD = ["neuroplastic.sweep", "neuroplastic.runner", "neuroplastic.engines.numpy.engine", "neuroplastic.plots",
           "neuroplastic.evaluate", "sklearn.datasets", "sklearn.linear_model", "sklearn.pipeline"]

_SERVER_THREADS: int | None = None

#: Seconds a point's process has, once told to stop (SIGTERM), to record it before it is ended outright.
STOP_GRACE_S = 20.0


@contextlib.contextmanager
def _blas_threads(threads: int):
    """Set the BLAS/OpenMP thread variables while a child process (or the fork server) starts."""
    with environment({k: str(threads) for k in BLAS_THREADS_ENV}):
        yield


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


def _child(task: dict[str, Any], conn, lifeline=None) -> None:
    _die_with_the_sweep(lifeline)
    try:
        row = run_point(task)
    except BaseException as err:                  # Ctrl-C before the run existed, or a bug in run_point
        row = {"point": task["point"], "status": "failed", "run": task["run"],
               "error": "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"}
    try:
        conn.send(row)
    except (OSError, KeyboardInterrupt):          # the sweep is gone: the run and events.jsonl keep the outcome
        pass
    finally:
        conn.close()


# -- a point's process dies with the sweep -----------------------------------------------------------
_stopping = threading.Event()


def _on_sigterm(signum, frame) -> None:
    """The first SIGTERM interrupts the point like Ctrl-C; later ones (it may come twice) are ignored."""
    if _stopping.is_set():
        return
    _stopping.set()
    threading.Thread(target=_end_after_grace, name="neuroplastic-stop-grace", daemon=True).start()
    raise KeyboardInterrupt


def _end_after_grace() -> None:
    """Backstop: a point stuck somewhere that does not see the KeyboardInterrupt is ended outright."""
    time.sleep(STOP_GRACE_S)                  # a daemon thread: it ends with the process, if that ends first
    os._exit(128 + signal.SIGTERM)


def _stop_point() -> None:
    """Send ourselves SIGTERM (handled in the main thread, like PR_SET_PDEATHSIG's)."""
    if not _stopping.is_set():
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_lifeline(lifeline) -> None:
    """Wait until the sweep's end of the lifeline closes (the sweep's process ended), then stop the point."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    _stop_point()


def _die_with_the_sweep(lifeline) -> None:
    """In a point's process: make SIGTERM interrupt it, and get SIGTERM when the sweep's process ends."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if sys.platform.startswith("linux"):
        _detach_from_fork_server()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)           # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if lifeline is not None:                    # also closes the race of a parent that died before prctl
        threading.Thread(target=_watch_lifeline, args=(lifeline,), name="neuroplastic-lifeline",
                         daemon=True).start()


def _detach_from_fork_server() -> None:
    """Close this process's copy of the fork server's keep-alive pipe.

    Every process forked by the fork server inherits it, which keeps the server alive until the
    last of them ends; without it the server exits with the sweep's process, and its death is what
    ``PR_SET_PDEATHSIG`` reports to this process (the fork server is its parent).
    """
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
        fd = server._forkserver_alive_fd
        if fd is not None and server._forkserver_pid is None:     # inherited, not a server of our own
            server._forkserver_alive_fd = None
            os.close(fd)
    except (AttributeError, OSError):          # another Python's internals: the lifeline still works
        pass


def run_local(tasks: list[dict[str, Any]], workers: int, threads: int) -> Iterator[dict[str, Any]]:
    """Run each task in its own process, ``workers`` at a time; yield each row as its process ends."""
    if not tasks:
        return
    ctx = _context(threads)
    pending, running = deque(tasks), {}
    lifeline, keep_alive = ctx.Pipe(duplex=False)   # only this process holds keep_alive: it closes when we end
    try:
        while pending or running:
            while pending and len(running) < workers:
                task = pending.popleft()
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(task, send, lifeline),
                                   name=f"neuroplastic-point-{task['point']}", daemon=True)
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
                proc.terminate()                  # SIGTERM: the point records "interrupted", then ends
                proc.join()
            conn.close()
        keep_alive.close()
        lifeline.close()


def _died(task: dict[str, Any], exitcode: int | None) -> dict[str, Any]:
    """Record a point whose process ended without a result: in its manifest, the sweep log and its row."""
    how = (f"killed by {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
           else f"exit code {exitcode}")
    error = f"the point's process died ({how}; out of memory?); re-run the sweep to resume it"
    directory = Path(task["out"]) / task["run"]
    _mark_failed(directory, error)
    log_event(task, "died", error=error, exitcode=exitcode)
    return point_row(task, directory, error)


def _mark_failed(directory: Path, error: str) -> None:
    """Mark a dead point's run failed, unless it is not running, or another process has taken it over since."""
    if run_state(directory) == "running":
        Run.fail_abandoned(directory, error)
