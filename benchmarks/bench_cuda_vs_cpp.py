"""The same network and stream on the cpp and cuda devices: compile time, simulation time, weights (needs a GPU).

    python benchmarks/bench_cuda_vs_cpp.py [--protocol FILE] [--glimpses 500] [--chunk 250]
                                           [--variant spiking|rate] [--layers 512,512,512]
                                           [--build-dir DIR [--build-only]]

Each device runs in its own process (Brian2 keeps one standalone device per process): the engine builds the
protocol's network (compiled into a fresh build folder, timed apart), then simulates one training stream of
``--glimpses`` saccade glimpses in chunks of ``--chunk`` (successive runs of the binary, as a training epoch
runs), from the same initial weights and the same stream, timed. Printed: the compile and simulation times,
the cpp / cuda ratio of the simulation times (> 1: cuda is faster; the target is >= 10 for the large
protocol), and how far the two devices' weights after the stream are apart, relative to how far the
stream moved them:

    d(a, b) = ||W_a - W_b|| / ||W_a - W_0||      and      r(a, b) = corr(W_a - W_0, W_b - W_0)

per plastic matrix. The rate variant is deterministic, so cuda must equal cpp to float precision. The
spiking variant's noise comes from each device's own generator, so a third process runs cpp again with
other spike noise: cuda vs cpp should sit as far apart as cpp vs cpp. Without a GPU it says so and exits.

``--build-dir DIR`` keeps the builds there (reused by a later call with the same network and chunk length;
the compile times it then prints are those of finding the cached build); ``--build-only`` only compiles.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> dict:
    import numpy as np

    from neuroplastic.api import load_protocol
    from neuroplastic.engines.brian.engine import ENGINE, TRAINING, _StreamGlimpses
    from neuroplastic.engines.prepare import prepare
    from neuroplastic.stimuli import saccade_stream

    sets = {"engine__device": args.device, "engine__variant": args.variant, "engine__chunk_glimpses": args.chunk}
    if args.layers:
        sets["model__layers"] = [int(n) for n in args.layers.split(",")]
    protocol = load_protocol(args.protocol, **sets)
    prepared = prepare(protocol)
    rng = np.random.default_rng(0)
    model = ENGINE.init(protocol, prepared, rng)
    session = model.net
    start = time.perf_counter()
    session.build()
    compile_s = time.perf_counter() - start
    if args.build_only:
        return {"device": args.device, "compile_s": compile_s}
    stream = saccade_stream(session.train_idx, session.n_positions, args.glimpses, protocol.stimulus.saccade_prob,
                            np.random.default_rng(1))
    initial = {k: np.asarray(v, dtype=float).copy() for k, v in model.params.items()}
    start = time.perf_counter()
    weights = session.simulate(_StreamGlimpses(stream, session.patches), stream.y, model.params, protocol.rule.lr,
                               noise=(TRAINING, args.noise))
    simulate_s = time.perf_counter() - start
    np.savez(args.save, **{f"w0/{k}": v for k, v in initial.items()},
             **{f"w/{k}": np.asarray(v, dtype=float) for k, v in weights.items()})
    synapses = sum(v.size for v in initial.values())
    return {"device": args.device, "noise": args.noise, "compile_s": compile_s, "simulate_s": simulate_s,
            "glimpses": args.glimpses, "synapses": synapses, "glimpse_ms": protocol.stimulus.glimpse_ms,
            "dt_ms": protocol.engine.dt_ms}


def compare(a: dict, b: dict, w0: dict) -> tuple[float, float]:
    """The largest d(a, b) and the smallest r(a, b) over the plastic matrices (module docstring)."""
    import numpy as np

    d, r = 0.0, 1.0
    for k in w0:
        moved = np.linalg.norm(a[k] - w0[k])              # how far run a's stream moved the weights
        d = max(d, np.linalg.norm(a[k] - b[k]) / max(moved, 1e-300))
        da, db = (a[k] - w0[k]).ravel(), (b[k] - w0[k]).ravel()
        r = min(r, float(np.corrcoef(da, db)[0, 1]) if da.std() > 0 and db.std() > 0 else float("nan"))
    return d, r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", default=str(ROOT / "protocols" / "clapp_natural_images_spiking.toml"))
    p.add_argument("--glimpses", type=int, default=500, help="length of the training stream")
    p.add_argument("--chunk", type=int, default=250, help="[engine] chunk_glimpses")
    p.add_argument("--variant", choices=("spiking", "rate"), default="spiking")
    p.add_argument("--layers", default="", help="e.g. 1024,1024,1024 (default: the protocol's)")
    p.add_argument("--build-dir", type=Path, help="keep (and reuse) the builds here (default: a fresh folder)")
    p.add_argument("--build-only", action="store_true", help="compile for both devices, simulate nothing")
    p.add_argument("--device", choices=("cpp", "cuda"), help=argparse.SUPPRESS)
    p.add_argument("--noise", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device:
        print(json.dumps(worker(args)))
        return 0

    import numpy as np

    from neuroplastic.engines.brian.device import gpu_available

    if not gpu_available():
        print("no GPU found (nvidia-smi -L lists none): cpp vs cuda cannot be compared on this machine. "
              "`neuroplastic run PROTOCOL --device cuda --build-only` still checks that the CUDA build compiles.")
        return 0
    common = ["--protocol", args.protocol, "--glimpses", str(args.glimpses), "--chunk", str(args.chunk),
              "--variant", args.variant, "--layers", args.layers]
    if args.build_only:
        common.append("--build-only")
    runs = [("cpp", 1), ("cuda", 1)] + ([("cpp", 2)] if args.variant == "spiking" and not args.build_only else [])
    rows, weights = [], []
    with tempfile.TemporaryDirectory(prefix="np-cuda-vs-cpp-") as tmp:
        builds = args.build_dir.resolve() if args.build_dir else f"{tmp}/builds"     # fresh: compile times
        env = {**os.environ, "NEUROPLASTIC_BUILD_DIR": str(builds)}
        for device, noise in runs:
            save = f"{tmp}/{device}-{noise}.npz"
            out = subprocess.run([sys.executable, __file__, "--device", device, "--noise", str(noise), "--save", save,
                                  *common], capture_output=True, text=True, env=env)
            if out.returncode:
                sys.stderr.write(out.stderr[-4000:])
                sys.exit(f"the {device} run failed (exit {out.returncode})")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if args.build_only:
                print(f"{device:>4}: compile {rows[-1]['compile_s']:7.1f} s ({builds})", flush=True)
                continue
            with np.load(save) as z:
                weights.append(({k[2:]: z[k] for k in z.files if k.startswith("w/")},
                                {k[3:]: z[k] for k in z.files if k.startswith("w0/")}))
            r = rows[-1]
            print(f"{device:>4} (spike noise {noise}): compile {r['compile_s']:7.1f} s   simulate {r['simulate_s']:7.2f} s "
                  f"({1e3 * r['simulate_s'] / r['glimpses']:.1f} ms per {r['glimpse_ms']:g} ms glimpse)", flush=True)
    if args.build_only:
        return 0
    cpp, cuda = rows[0], rows[1]
    ratio = cpp["simulate_s"] / cuda["simulate_s"]
    print(f"\n{Path(args.protocol).name} ({args.variant}, {cpp['synapses']:,} plastic synapses, dt {cpp['dt_ms']} ms), "
          f"{args.glimpses} glimpses in chunks of {args.chunk}:")
    print(f"simulation time cpp / cuda: {ratio:.1f}x (> 1: cuda is faster; target >= 10)")
    w0 = weights[0][1]
    d, r = compare(weights[1][0], weights[0][0], w0)
    print(f"cuda vs cpp, same stream: d = {d:.2e}, r = {r:.4f}  (d: ||W_cuda - W_cpp|| / ||W_cuda - W_0||, "
          f"largest over the matrices; r: smallest correlation of their updates)")
    ratios = {"cpp / cuda simulation time": {"value": ratio, "target": ">= 10",
                                             "what": f"{args.glimpses} glimpses, compile excluded"},
              "weight difference cuda vs cpp": {"value": d, "target": "",
                                                "what": "final weights apart, over how far cuda moved them"}}
    if len(rows) > 2:
        d2, r2 = compare(weights[2][0], weights[0][0], w0)
        print(f"cpp vs cpp, other spike noise: d = {d2:.2e}, r = {r2:.4f}  (the spike noise's own spread)")
        ratios["weight difference cpp vs cpp, other noise"] = {"value": d2, "target": "", "what": "the same, cpp twice"}
    from neuroplastic.bench import record

    record("cuda_vs_cpp", ratios, protocol=str(args.protocol), rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
