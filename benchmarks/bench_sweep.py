"""Wall time of a sweep of 8 quick points on 2 local workers vs the same points one after another.

    python benchmarks/bench_sweep.py                  # 1 round: 1 worker, then 2 workers
    python benchmarks/bench_sweep.py --rounds 3       # alternate 1 and 2 workers, 3 times each

Both sides use the same code path (``neuroplastic.sweep``: a fresh process per point, forked from a
server that preloaded the imports, one BLAS thread each); only ``--workers`` differs. Each sweep
writes into a new temporary results root, so every point really runs. A one-point warm-up sweep
starts the fork server first, so neither side pays its start-up. On 2 cores the ideal speed-up is
2x; the fork, the result pipe and the summary figure of each point are inside the measurement.
The machine may be shared: the load average is printed before and after, so a poor ratio can
be told from a busy machine.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from neuroplastic.bench import record
from neuroplastic.sweep import plan, sweep

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.epochs=2", "data.max_samples=300", "model.layers=[16]", "evaluate.baseline=false"]


def timed_sweep(protocol: Path, grid: list[str], sets: list[str], workers: int) -> float:
    """Seconds to run every point of the grid, from scratch, on ``workers`` local processes."""
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as out:
        p = plan(protocol, grid, sets, out)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = sweep(p, workers=workers, progress=False)
        seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the {workers}-worker sweep failed (exit {code})")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", type=Path, default=ROOT / "protocols" / "clapp_digits.toml")
    ap.add_argument("--points", type=int, default=8, help="points of the grid (seeds 1..N)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the parallel side")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two sides this many times")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override the quick settings (repeatable)")
    args = ap.parse_args(argv)
    sets = [*QUICK, *args.overrides]
    grid = [f"seed=1..{args.points}"]
    print(f"{args.points} points of {args.protocol.name} with {' '.join(sets)}; "
          f"{len(os.sched_getaffinity(0))} CPUs; load average before: {_load()}")
    timed_sweep(args.protocol, ["seed=1"], sets, 1)               # warm-up: fork server, data, caches
    serial, parallel = [], []
    for r in range(args.rounds):
        serial.append(timed_sweep(args.protocol, grid, sets, 1))
        parallel.append(timed_sweep(args.protocol, grid, sets, args.workers))
        print(f"round {r + 1}: 1 worker {serial[-1]:6.1f} s   {args.workers} workers {parallel[-1]:6.1f} s   "
              f"speed-up {serial[-1] / parallel[-1]:.2f}x   (load average {_load()})")
    ratio = statistics.median(a / b for a, b in zip(serial, parallel))      # each round measured side by side
    print(f"median: 1 worker {statistics.median(serial):.1f} s, {args.workers} workers "
          f"{statistics.median(parallel):.1f} s, speed-up {ratio:.2f}x (median of the rounds; ideal "
          f"{min(args.workers, len(os.sched_getaffinity(0)))}x); load average after: {_load()}")
    record("sweep", {f"speed-up, {args.workers} workers vs 1": {
        "value": ratio, "target": ">= 1.6" if args.workers == 2 else "",
        "what": f"{args.points} quick points, median of {args.rounds} round(s)"}}, load_after=_load())
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
