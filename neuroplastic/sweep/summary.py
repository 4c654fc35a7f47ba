"""What a sweep writes into its own directory: the points, one row per point, and a log of attempts.

It exists so that a sweep can be followed, audited and summarised without touching its runs: the
run directories are the results store's (:mod:`neuroplastic.results`); this module only reads them
back into rows. The sweep adds ``<out>/<name>-sweep-<hash10>/`` (hash of the resolved protocol
and the grid) holding

- ``points.json``: a list of the points: grid values, overrides and run directory (relative to
  ``<out>``, the sweep directory's parent), written before anything runs; ``sweep.json``: the
  protocol file, ``--set`` overrides, grid and command line;
- ``summary.csv``: one row per point (grid values, status, final probe accuracies and train
  losses per layer, elapsed time, run directory, error), rewritten atomically as points end;
- ``events.jsonl``: one line per attempt (``start``, ``finish``, ``fail``, ``skip``, ``died``,
  ``busy``) with host, pid, time and the invocation of the sweep command that made it, appended
  by the processes that ran them: which worker ran what, and how often;
- ``sweep.lock``: held (``flock``) by the sweep command running it, for as long as it runs.

Each file is either rewritten atomically (a temporary file, then a rename) or appended to with
single writes, so a sweep killed at any instant leaves none half-written; the temporary files
of a killed write are removed by the next run of the sweep. The same sweep (same protocol, grid
and ``--out``) runs in one command at a time: a second one while the first runs is refused,
naming it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..locks import DirectoryLock
from ..results import atomic_write, read_metrics

if TYPE_CHECKING:
    from .grid import Plan

__all__ = ["invocation", "log_event", "point_row", "read_events", "sweep_lock",
           "summary_table", "write_points", "write_summary"]

_LOCK = "sweep.lock"


def point_row(task: dict[str, Any], directory: Path, error: str | None = None,
              status: str = "failed") -> dict[str, Any]:
    """A point's result as read back from its run directory (which may not exist).

    Its status is ``finished``, else ``status``: ``failed``, or ``busy`` (another process runs it).
    """
    manifest = _read_json(directory / "manifest.json") or {}
    summary = _read_json(directory / "summary.json") or {}
    losses = [r for r in read_metrics(directory) if r["stage"] == "train" and r["name"] == "loss"]
    last = max((r["epoch"] for r in losses), default=None)
    finished = error is None and manifest.get("status") == "finished"
    return {"point": task["point"], "status": "finished" if finished else status, "run": task["run"],
            "probe": summary.get("probe", {}), "probe_random": summary.get("probe_random", {}),
            "loss": {str(r["layer"]): r["value"] for r in losses if r["epoch"] == last},
            "elapsed_s": manifest.get("elapsed_s"),
            "error": None if finished else (error or manifest.get("error") or f"run is {manifest.get('status')}")}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def log_event(task: dict[str, Any], event: str, **fields) -> None:
    """Append one line to the sweep's ``events.jsonl`` (a single O_APPEND write: lines never interleave)."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "t": time.time(), "point": task["point"],
              "event": event, "run": task["run"], "host": socket.gethostname(), "pid": os.getpid(),
              "invocation": task.get("invocation"), **fields}
    record = {k: v for k, v in record.items() if v is not None}
    fd = os.open(Path(task["sweep_dir"]) / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(record, default=str) + "\n").encode())
    finally:
        os.close(fd)


def invocation() -> str:
    """A new identifier of one run of a sweep command (``events.jsonl`` tells its attempts apart by it)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def sweep_lock(directory: Path, command: list[str] | None = None) -> DirectoryLock:
    """The lock of a sweep directory (``sweep.lock``), held by the command running the sweep."""
    return DirectoryLock(directory, _LOCK, command or sys.argv)


def read_events(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a sweep's ``events.jsonl``, oldest first."""
    path = Path(sweep_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def write_points(p: Plan, command: list[str] | None) -> None:
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


def write_summary(p: Plan, rows: dict[int, dict[str, Any]]) -> None:
    """Rewrite ``summary.csv`` atomically: one line per point, finished or not."""
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
