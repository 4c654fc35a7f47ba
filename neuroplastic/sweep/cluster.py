"""Points on a dask.distributed cluster: the optional way to spread a sweep over machines.

It exists apart from the local pool because dask is an optional extra: it is imported here, and
only when ``--scheduler`` is given.

**Dask** (``--scheduler ADDRESS``, ``pip install neuroplastic[sweep]``): each point is a task
running :func:`run_point` in a worker process. A module lock runs one point at a time per worker
process, since Brian2's global device is not thread-safe (start workers with ``--nthreads 1``
to not leave threads idle). BLAS threads are the workers' own: dask's nanny starts workers with
``OMP_NUM_THREADS=1`` etc. (``distributed.nanny.pre-spawn-environ``). When a worker dies, dask
re-runs its task elsewhere, which resumes the run from its checkpoint; a point whose workers
keep dying fails with ``KilledWorker`` (``distributed.scheduler.allowed-failures``). ``--out`` and
the protocol file must be on a file system that the client and every worker see at the same path.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

from ..errors import SweepError
from .point import run_point
from .summary import log_event, point_row

__all__ = ["connect", "run_on_dask"]


def connect(address: str):
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


def run_on_dask(client, tasks: list[dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
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
                log_event(task, "died", error=error)
                row = point_row(task, Path(task["out"]) / task["run"], error)
            future.release()                      # its result is read: dask need not keep (or recompute) it
            yield row
