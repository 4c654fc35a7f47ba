"""What the autograd benchmarks share: fresh worker processes, their peak memory and the machine's load.

Each engine is timed in its own process (``python <script> --worker MODE ...``) so that neither
inherits the other's allocations; the parent measures how much CPU *other* processes used meanwhile,
because a busy machine makes BLAS threads wait for each other and distorts both engines' timings.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

MIB = 1024.0 * 1024.0


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss() -> int | None:
    """Current resident set size of this process in bytes (VmRSS)."""
    return _status("VmRSS")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM, else ru_maxrss)."""
    hwm = _status("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_threads(args):
    """numpy's BLAS and torch get the same thread count; returns threadpoolctl's limiter and info."""
    from threadpoolctl import threadpool_info, threadpool_limits
    limiter = threadpool_limits(args.threads)
    return limiter, threadpool_info()


def _cpu_ticks():
    """(busy, total) jiffies of all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def run_worker(script: str, args, mode: str) -> dict:
    """Run ``script --worker mode`` in a fresh process; return its JSON line plus ``other_load``."""
    import resource
    cmd = [sys.executable, os.path.abspath(script), "--worker", mode, *args.passthrough]
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_ticks()
    r = subprocess.run(cmd, capture_output=True, text=True)
    ru1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_ticks()
    if r.returncode != 0:
        sys.exit(f"worker {mode} failed:\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if t0 and t1 and t1[1] > t0[1]:
        hz = os.sysconf("SC_CLK_TCK")
        own = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) * hz
        out["other_load"] = max(0.0, (t1[0] - t0[0] - own) / (t1[1] - t0[1]))
    return out


def worker_options(argv: list[str], threads: int) -> list[str]:
    """The parent's options without ``--worker MODE``, plus the thread count: what each worker is started with."""
    options, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--worker":
            skip = True
        elif not a.startswith("--worker="):
            options.append(a)
    return options + ["--threads", str(threads)]


def alternate_runs(script: str, args, rate_key: str, modes=("numpy", "torch")) -> list[dict]:
    """``args.repeats`` runs of each engine (``modes``, in that order), each in a fresh process, so all see the same drift."""
    rows = []
    for r in range(args.repeats):
        for mode in modes:
            row = run_worker(script, args, mode) | {"rep": r + 1}
            rows.append(row)
            print(f"  run {r + 1} {mode}: {row[rate_key]:.1f} {rate_key.removesuffix('_per_s')}/s", flush=True)
    return rows


def print_libraries(rows: list[dict]) -> None:
    """Which BLAS the numpy worker used (after the thread limit) and torch's version and threads."""
    torch_row = next(x for x in rows if x["engine"] == "torch")
    print("\nnumpy BLAS (threadpoolctl.threadpool_info() inside the numpy worker, after the thread limit):")
    for lib in rows[0]["blas"]:
        print("  " + ", ".join(f"{k}={lib.get(k)}" for k in ("user_api", "internal_api", "version", "num_threads",
                                                           "threading_layer", "architecture", "filepath")))
    print(f"torch {torch_row['torch_version']}, torch.get_num_threads() = {torch_row['torch_threads']}")


def report_ratios(rows: list[dict], rate_key: str, name: str, what: str, **meta) -> None:
    """Print the numpy/torch throughput and peak-memory ratios of each pair of runs and record their medians.

    Runs alternate (numpy, torch, numpy, torch, ...), so each ratio compares two runs made one
    after the other; the median resists a run disturbed by other load on the machine.
    """
    import statistics

    from neuroplastic.bench import record

    pairs = list(zip(rows[0::2], rows[1::2]))
    ratios = [a[rate_key] / b[rate_key] for a, b in pairs]
    mem_ratios = [a["peak_mib"] / b["peak_mib"] for a, b in pairs if b["peak_mib"] > 0]
    print(f"\nthroughput ratio numpy/torch: median {statistics.median(ratios):.2f} "
          f"(per run: {', '.join('%.2f' % v for v in ratios)}; target >= 1.0)")
    out = {"throughput numpy/torch": {"value": statistics.median(ratios), "target": ">= 1.0", "what": what}}
    if mem_ratios:
        print(f"peak memory ratio numpy/torch: median {statistics.median(mem_ratios):.2f} "
              f"(per run: {', '.join('%.2f' % v for v in mem_ratios)}; target <= 1.0)")
        out["peak memory numpy/torch"] = {"value": statistics.median(mem_ratios), "target": "<= 1.0",
                                          "what": "peak RSS increase of the training loop"}
    record(name, out, **meta)


def time_steps(args, build, inputs, build_tiny, tiny_inputs=None) -> dict:
    """A worker's measurement: ``args.warmup`` untimed then ``args.steps`` timed training steps of ``build()``.

    ``inputs(k)`` are the arguments of step ``k``. ``build_tiny()`` is a tiny network of the same
    library, stepped twice first on ``tiny_inputs(k)`` (default ``inputs``), so that one-time
    runtime set-up (lazy imports, thread pools, BLAS buffers, allocator arenas) is in the memory
    baseline taken just before ``build()``. Returns the median step time ``step_s``, every step
    time, peak and steady memory above the baseline (MiB), minor page faults per timed step, and
    the libraries' threads and versions.
    """
    import gc
    import resource
    import statistics
    import time

    _, info = set_threads(args)
    if args.worker != "numpy":                       # every other worker computes with torch
        import torch
        torch.set_num_threads(args.threads)
    tiny = build_tiny()
    for k in range(2):
        tiny.step(*(tiny_inputs or inputs)(k))
    del tiny
    gc.collect()
    rss_before = rss()
    engine = build()
    for k in range(args.warmup):
        engine.step(*inputs(k))
    rss_steady = rss()
    exact = reset_peak_rss()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for k in range(args.warmup, args.warmup + args.steps):
        t0 = time.perf_counter()
        engine.step(*inputs(k))
        times.append(time.perf_counter() - t0)
    peak = peak_rss()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"engine": args.worker, "step_s": statistics.median(times), "step_s_all": times,
           "peak_mib": (peak - rss_before) / MIB, "steady_mib": (rss_steady - rss_before) / MIB,
           "rss_before_mib": rss_before / MIB, "exact_peak": exact, "threads": args.threads, "blas": info,
           "minflt_per_step": (ru1.ru_minflt - ru0.ru_minflt) / args.steps}
    if args.worker != "numpy":
        out["torch_threads"] = torch.get_num_threads()
        out["torch_version"] = torch.__version__
    return out
