"""The same protocol on the cpp and cuda devices: speed ratio and final-weight difference (needs a GPU).

    python benchmarks/bench_cuda_vs_cpp.py protocols/clapp_digits_brian.toml [--set table.key=value ...]

Runs the protocol twice into a temporary results root, once per device, and prints the wall time of
each (compilation included; a second call reuses the builds) and the largest difference of the
final weights relative to their scale. The rate variant must agree to float tolerance; the spiking
variant's spike noise comes from different random generators on the two devices, so only its
statistics can agree. Without a GPU it says so and exits without running anything.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neuroplastic.bench import record
from neuroplastic.engines.brian.device import gpu_available
from neuroplastic.cli import main as cli
from neuroplastic.protocol import load
from neuroplastic.results import Run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("protocol", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE")
    args = p.parse_args(argv)
    if not gpu_available():
        print("no GPU found (nvidia-smi -L lists none): cpp vs cuda cannot be compared on this machine. "
              "`neuroplastic run PROTOCOL --device cuda --build-only` still checks that the CUDA build compiles.")
        return 0
    out = Path(tempfile.mkdtemp(prefix="np-cuda-vs-cpp-"))
    results = {}
    for device in ("cpp", "cuda"):
        overrides = [*args.overrides, f'engine.device="{device}"']
        t0 = time.perf_counter()
        rc = cli(["run", str(args.protocol), "--quiet", "--out", str(out), *(a for o in overrides for a in ("--set", o))])
        wall = time.perf_counter() - t0
        if rc != 0:
            sys.exit(f"{device} run failed (exit {rc})")
        run = Run.load(Run.path_for(out, load(args.protocol, overrides)))
        _, arrays, _ = run.latest_checkpoint()
        results[device] = (wall, {k: v for k, v in arrays.items() if k.startswith("param/")},
                           json.loads((run.directory / "summary.json").read_text()))
    (cpu_wall, cpu_w, cpu_s), (gpu_wall, gpu_w, gpu_s) = results["cpp"], results["cuda"]
    diff = max(np.abs(cpu_w[k] - gpu_w[k]).max() / max(np.abs(cpu_w[k]).max(), 1e-30) for k in cpu_w)
    print(f"{args.protocol}: cpp {cpu_wall:.1f} s, cuda {gpu_wall:.1f} s (wall, compile included) "
          f"-> cuda/cpp time ratio {gpu_wall / cpu_wall:.2f}")
    print(f"max |W_cpp - W_cuda| / max |W_cpp| over all weight matrices: {diff:.2e}")
    print(f"probe cpp {cpu_s['probe']}  cuda {gpu_s['probe']}")
    record("cuda_vs_cpp", {"cuda / cpp wall time": {"value": gpu_wall / cpu_wall, "target": "",
                                                    "what": "whole run, compile included"},
                           "weight difference cuda vs cpp": {"value": diff, "target": "",
                                                             "what": "max |W_cpp - W_cuda| / max |W_cpp|"}},
           protocol=str(args.protocol))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
