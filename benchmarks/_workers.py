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
