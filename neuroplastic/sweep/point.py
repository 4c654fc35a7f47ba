"""One sweep point, in whichever process runs it (a local child process or a dask worker).

It exists because a point must be safe to run more than once, and next to other points:

**Idempotent points.** A point whose run directory says ``finished`` is never run again: the
command checks before submitting, and the worker checks again before starting (a task that dask
re-executes after a worker died, or whose finished result was lost with the worker, reads the
finished run instead of training it twice). An unfinished point (``running`` after a crash,
``failed``) is resumed from its last checkpoint. Re-running a sweep command therefore runs only
what is missing, failed or unfinished.

**A point in use elsewhere is left to its process.** A run directory is locked by the process
that runs it (:meth:`neuroplastic.results.Run.open`). When two sweeps share points (run at the
same time into the same ``--out``), the point that one of them is running is *busy* for the other:
it is reported (``status = "busy"``, event ``busy``, the holder named in the error) and not run,
and running the sweep again once the other process has finished picks up its result. A point that
another process finished between the check and the start is read, not run again.

**Brian2 builds shared by points.** Points that differ only in ``run_args`` values (seed,
learning rate, initial weights, stimulus) share one cached build (``neuroplastic.engines.brian.device``).
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

import json
import os
import threading
import traceback
from pathlib import Path
from typing import Any

from ..errors import DeviceError, ModelError, RunBusy, RunError
from ..protocol import load
from ..results import Run
from .summary import log_event, point_row

__all__ = ["BLAS_THREADS_ENV", "run_point", "run_state"]

#: Environment variables that fix the number of BLAS/OpenMP threads when numpy is imported.
BLAS_THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# One point at a time per process, whoever calls run_point from threads (a dask worker with several
# threads): Brian2's device and preferences are global per process and not thread-safe.
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
    from ..runner import run_protocol

    with _ONE_POINT_AT_A_TIME:
        directory = Path(task["out"]) / task["run"]
        try:
            protocol = load(task["protocol_file"], task["overrides"])
        except (ValueError, ModelError) as err:     # e.g. a worker that does not see the protocol file
            log_event(task, "fail", error=str(err))
            return point_row(task, directory, str(err))
        if Run.path_for(task["out"], protocol) != directory:
            error = (f"this worker resolves the point to run {Run.path_for('', protocol).name}, not {task['run']}: "
                     "it resolves the protocol differently (another version of neuroplastic?)")
            log_event(task, "fail", error=error)
            return point_row(task, directory, error)
        if run_state(directory) == "finished":
            log_event(task, "skip")
            return point_row(task, directory)
        resume = directory.exists()
        log_event(task, "start", resume=resume, blas_threads={k: os.environ.get(k) for k in BLAS_THREADS_ENV})
        error, trace = None, None
        try:
            # resume=True whether or not the directory exists now: another process may create it meanwhile
            outcome = run_protocol(protocol, task["out"], resume=True, progress=False, command=task["command"])
            if outcome.reused:                    # finished by another process since the check above: read, not run
                log_event(task, "skip")
                return point_row(task, directory)
            error = outcome.error
        except RunBusy as err:                    # another process runs this point now: leave it to that one
            log_event(task, "busy", error=str(err))
            return point_row(task, directory, str(err), status="busy")
        except (ValueError, ModelError, RunError, DeviceError) as err:   # input errors, before training
            if isinstance(err, RunError) and run_state(directory) == "finished":   # by another process, just now
                log_event(task, "skip")
                return point_row(task, directory)
            error = str(err)
        except Exception as err:
            error, trace = f"{type(err).__name__}: {err}", traceback.format_exc()
        log_event(task, "finish" if error is None else "fail", error=error, traceback=trace)
        return point_row(task, directory, error)
