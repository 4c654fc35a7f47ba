"""``neuroplastic bench``: run the scripts in ``benchmarks/`` and write one report of every ratio they measure.

Each benchmark script prints its own table and, when the environment variable
``NEUROPLASTIC_BENCH_JSON`` names a file, also records its ratios there with :func:`record`. This
module runs the scripts one after another (they measure ratios side by side within one run, so the
machine's load affects both sides), then writes ``results.json``, ``report.md`` (ratios, targets, the
machine, versions and date) and ``report.png``/``.pdf`` (the performance figure).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError
from .resources import benchmarks_dir
from .results import atomic_write

__all__ = ["BENCHMARKS", "Benchmark", "ensure_results", "record", "run_benchmarks", "write_report"]

#: The checkout's benchmark scripts; None in an installed wheel, which does not ship them.
BENCH_DIR = benchmarks_dir()
ENV = "NEUROPLASTIC_BENCH_JSON"
#: Names the authors' ``vision`` folder (EPFL-LCN/pub-illing2021-neurips), fetched by the user, never shipped.
AUTHORS_ENV = "NEUROPLASTIC_AUTHORS_CODE"


@dataclass(frozen=True)
class Benchmark:
    """A script in ``benchmarks/``: its arguments at full and quick size, and what it needs to run."""

    script: str
    doc: str
    quick: tuple[str, ...] = ()
    needs: str = ""            # "torch", "gpu" or "authors": skipped (and reported as skipped) when missing


BENCHMARKS = {
    "rate_vs_autograd": Benchmark("bench_rate_vs_autograd.py", "dense CLAPP-s step: numpy engine vs torch autograd",
                                  ("--steps", "10", "--repeats", "1"), needs="torch"),
    "conv_vs_autograd": Benchmark("bench_conv_vs_autograd.py", "VGG-6 conv CLAPP step: numpy vs torch autograd",
                                  ("--width", "0.25", "--steps", "2", "--no-check"), needs="torch"),
    "brian_rate": Benchmark("bench_brian_rate.py", "Brian2 rate network: compile once vs re-run, vs numpy",
                            ("--glimpses", "2000")),
    "brian_spiking": Benchmark("bench_brian_spiking.py", "spiking CLAPP vs a plain Brian2 network; ΔW vs rate",
                               ("--glimpses", "50", "--reps", "1")),
    "cost_model": Benchmark("cost_model.py", "spiking run time per step, synaptic event and learning update",
                            ("--configs", "16,16,16:25", "16,32,32:25", "16,64,64:25", "16,32,32,32:50",
                             "--glimpses", "10", "--reps", "1")),
    "brian_stream": Benchmark("bench_brian_stream.py", "spiking stream of 10^4 vs 10^5 glimpses in chunks: peak memory",
                              ("--glimpses", "2000", "10000")),
    "stl10_memory": Benchmark("bench_stl10_memory.py", "one pass over STL-10 unlabeled at batch 32: peak memory",
                              ("--images", "20000", "--readers", "loader")),
    "sweep": Benchmark("bench_sweep.py", "2-worker local sweep of 8 quick points vs one after another",
                       ("--points", "4")),
    "vs_authors": Benchmark("bench_vs_authors.py", "VGG-6 CLAPP-s step: the authors' code vs numpy and torch",
                            ("--layers", "2", "--batch", "8", "--repeats", "1", "--steps", "1"), needs="authors"),
    "cuda_vs_cpp": Benchmark("bench_cuda_vs_cpp.py", "one network and stream on cuda vs cpp (needs a GPU)",
                             ("--protocol", "protocols/clapp_digits_spiking.toml", "--glimpses", "200",
                              "--chunk", "100"), needs="gpu"),
}


def _cell(text: str) -> str:
    """``text`` as one cell of a markdown table: its pipes (``max |W|``) escaped, so they do not split the row."""
    return str(text).replace("|", "\\|")


def record(name: str, ratios: dict[str, dict[str, Any]], **details: Any) -> None:
    """Called by a benchmark script at its end: write its ratios where ``neuroplastic bench`` asked.

    ``ratios`` maps a label to ``{"value": float, "target": "<= 1.0" | ">= 1.6" | "", "what": str}``.
    A script run by hand (no ``NEUROPLASTIC_BENCH_JSON``) records nothing.
    """
    path = os.environ.get(ENV)
    if path:
        atomic_write(path, json.dumps({"name": name, "ratios": ratios, "details": details,
                                       "argv": sys.argv[1:]}, indent=2, default=str) + "\n")


def _missing(needs: str) -> str:
    if needs == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed (pip install torch==2.13.0)"
    if needs == "gpu":
        from .engines.brian.device import gpu_available

        if not gpu_available():
            return "no GPU on this machine"
    if needs == "authors":
        folder = os.environ.get(AUTHORS_ENV)
        if not folder or not (Path(folder) / "CLAPPVision").is_dir():
            return f"{AUTHORS_ENV} does not name the authors' 'vision' folder (the one holding CLAPPVision)"
        return _missing("torch")
    return ""


def _meets(value: float, target: str) -> bool | None:
    if not target:
        return None
    op, bound = target.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


def run_benchmarks(names, out: Path, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the named benchmarks (their own processes, one at a time); return and save all results."""
    names = list(names)
    if BENCH_DIR is None or (missing := [BENCHMARKS[n].script for n in names
                                         if not (BENCH_DIR / BENCHMARKS[n].script).is_file()]):
        where = "this installation has no benchmarks/ directory" if BENCH_DIR is None else \
            f"{BENCH_DIR} has no {', '.join(missing)}"
        raise BenchError(f"the benchmark scripts ship only with the source checkout, not with an installed "
                         f"package ({where}): clone the repository and pip install -e . there")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in names:
        bench = BENCHMARKS[name]
        if why := _missing(bench.needs):
            results[name] = {"name": name, "skipped": why}
            if progress:
                print(f"{name:<18} skipped: {why}", flush=True)
            continue
        raw = out / f"{name}.json"
        cmd = [sys.executable, str(BENCH_DIR / bench.script), *(bench.quick if quick else ())]
        if bench.needs == "authors":
            cmd += ["--authors-code", os.environ[AUTHORS_ENV]]
        if progress:
            print(f"{name:<18} {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=BENCH_DIR.parent, env={**os.environ, ENV: str(raw)}, capture_output=True, text=True)
        atomic_write(out / f"{name}.log", proc.stdout + proc.stderr)
        if proc.returncode != 0 or not raw.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            results[name] = {"name": name, "failed": f"exit {proc.returncode}: " + " | ".join(tail)}
        else:
            results[name] = json.loads(raw.read_text())
        results[name].update(seconds=round(time.perf_counter() - t0, 1), quick=quick)
    atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def _machine() -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for pkg in ("neuroplastic", "numpy", "brian2", "brian2cuda", "torch", "dask"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "load_average": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """``report.md`` and the performance figure from ``results`` (what :func:`run_benchmarks` returned)."""
    import matplotlib.pyplot as plt

    from .plots import performance
    from .results import save_figure

    m = _machine()
    lines = ["# neuroplastic benchmark report", "",
             f"{m['date']} · {m['cpu']} · {m['cores']} cores · {m['memory_gib']} GiB · Python {m['python']} · "
             f"load average {', '.join(f'{x:.1f}' for x in m['load_average'])}", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
             "| benchmark | ratio | value | target | met | what |", "|---|---|---|---|---|---|"]
    for name, res in results.items():
        if "skipped" in res or "failed" in res:
            lines.append(f"| {name} | — | — | — | — | {_cell(res.get('skipped') or 'FAILED ' + res['failed'])} |")
            continue
        for label, r in res["ratios"].items():
            met = _meets(r["value"], r.get("target", ""))
            lines.append(f"| {name} | {label} | {r['value']:.3g} | {r.get('target') or '—'} | "
                         f"{'—' if met is None else ('yes' if met else '**no**')} | {_cell(r.get('what', ''))} |")
    quick = any(r.get("quick") for r in results.values())
    lines += ["", f"Each script ran once{' at its quick size (`--quick`)' if quick else ''}; its log is "
              "`<name>.log` next to this report. Ratios are measured side by side within one run."]
    atomic_write(Path(out) / "report.md", "\n".join(lines) + "\n")
    fig, _ = performance({}, bench=results, title="neuroplastic benchmarks: measured ratios and their targets")
    paths = save_figure(fig, Path(out) / "report")
    plt.close(fig)
    return [Path(out) / "report.md", *paths]


def ensure_results(names, out: Path, quick: bool = True) -> dict[str, Any]:
    """Benchmark results for a figure: read from ``out/results.json``, running only missing or failed ones."""
    path = Path(out) / "results.json"
    have = json.loads(path.read_text()) if path.is_file() else {}
    missing = [n for n in names if n not in have or "failed" in have[n]]
    if missing:
        have.update(run_benchmarks(missing, out, quick=quick))
        atomic_write(path, json.dumps(have, indent=2) + "\n")
    return {n: have[n] for n in names}
