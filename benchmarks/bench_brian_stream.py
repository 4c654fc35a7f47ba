"""Memory of a long glimpse stream through a compiled Brian2 network: chunked runs keep it bounded.

Each stream length runs in its own process: the spiking quickstart network (``clapp_digits_spiking``, short
glimpses so that 10^5 of them take minutes) learns on a saccade stream of that many glimpses through the
engine's own chunk loop (``[engine] chunk_glimpses``), keeping the per-glimpse scores as a training epoch does.
Reported per length: wall time, the peak resident memory of the Python process and of the compiled binary
(the largest of its runs), and the ratio of the longest stream's peaks to the shortest's. Targets: the
longest run <= 2 GiB in all, <= 1.1x the shortest's. The build is shared (``NEUROPLASTIC_BUILD_DIR``), so
the first worker compiles and the others re-run it.

What does a chunk cost? Given several ``--chunk`` lengths, the longest stream runs at each, and the time
per run of the binary (the engine writing a chunk's inputs, the binary starting, loading them and writing
its state back, the engine reading it) is the slope of the stream's time against its number of runs,
fitted across the chunk lengths:

    python benchmarks/bench_brian_stream.py --protocol protocols/clapp_natural_images_spiking.toml \
        --glimpse-ms 0 --dt-ms 0 --glimpses 1000 --chunk 50 100 250 500

usage: python benchmarks/bench_brian_stream.py [--glimpses 10000 100000] [--chunk 1000 ...] [--glimpse-ms 10]
                                               [--dt-ms 0.25] [--layers 32,32] [--protocol FILE]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME = Path("/usr/bin/time")


def worker(args) -> dict:
    import numpy as np

    from neuroplastic.api import load_protocol
    from neuroplastic.engines.brian.engine import ENGINE, TRAINING, _Scores
    from neuroplastic.engines.prepare import prepare
    from neuroplastic.stimuli import saccade_stream
    from neuroplastic.engines.brian.engine import _StreamGlimpses

    sets = {"stimulus__glimpse_ms": args.glimpse_ms or None, "engine__dt_ms": args.dt_ms or None, "engine__chunk_glimpses": args.chunk,
            "model__layers": [int(n) for n in args.layers.split(",")] if args.layers else None}
    protocol = load_protocol(args.protocol, **{k: v for k, v in sets.items() if v is not None})
    prepared = prepare(protocol)
    rng = np.random.default_rng(0)
    model = ENGINE.init(protocol, prepared, rng)
    session = model.net
    session.build()                                  # compiled (or found in the cache) before the clock starts
    # The binary's own peak: GNU time measures it from a small process (a child forked from Python would
    # count Python's pages in its ru_maxrss).
    peaks = Path(args.peaks)
    if TIME.is_file():
        import brian2 as b2

        b2.prefs.devices.cpp_standalone.run_cmd_unix = [str(TIME), "-a", "-o", str(peaks), "-f", "%M", "./main"]
    stream = saccade_stream(session.train_idx, session.n_positions, args.worker, protocol.stimulus.saccade_prob, rng)
    scores, chunks = _Scores(), []

    def read(net, first, n):                         # called once per run of the binary
        chunks.append(n)
        scores.read(net, n)

    start = time.perf_counter()
    weights = session.simulate(_StreamGlimpses(stream, session.patches), stream.y, model.params, protocol.rule.lr,
                               noise=(TRAINING, 1), read=read)
    seconds = time.perf_counter() - start
    u, _ = scores.joined()
    assert len(u[0]) == args.worker and all(np.isfinite(w).all() for w in weights.values())
    peaks_kib = [int(line) for line in peaks.read_text().split()] if peaks.is_file() else []
    return {"glimpses": args.worker, "seconds": seconds, "runs": len(chunks),
            "python_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "binary_mib": max(peaks_kib) / 1024.0 if peaks_kib else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--glimpses", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--protocol", default=str(ROOT / "protocols" / "clapp_digits_spiking.toml"))
    parser.add_argument("--chunk", type=int, nargs="+", default=[1000],
                        help="[engine] chunk_glimpses (several: the longest stream also runs at each, and the "
                             "time per run is fitted; peak memory is compared at the first)")
    parser.add_argument("--glimpse-ms", type=float, default=10.0, help="0: the protocol's")
    parser.add_argument("--dt-ms", type=float, default=0.25,
                        help="0: the protocol's (0.25: an input's spike draw per step stays below 1 at 4 kHz)")
    parser.add_argument("--layers", default="", help="e.g. 64,64 (default: the protocol's)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peaks", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.chunk = args.chunk[0]
        print(json.dumps(worker(args)))
        return 0
    if min(args.chunk) < 1 or min(args.glimpses) < 1:
        parser.error("--glimpses and --chunk: counts of 1 or more")
    if not TIME.is_file():
        print(f"{TIME} (GNU time) is missing: the binary's peak memory is not measured, only Python's")
    common = ["--protocol", args.protocol, "--glimpse-ms", str(args.glimpse_ms), "--dt-ms", str(args.dt_ms),
              "--layers", args.layers]
    longest, chunk = max(args.glimpses), args.chunk[0]
    jobs = [(n, chunk) for n in sorted(args.glimpses)] + [(longest, c) for c in args.chunk[1:]]
    rows = []
    for n, c in jobs:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, __file__, "--worker", str(n), "--peaks", f"{tmp}/peaks",
                                  "--chunk", str(c), *common], capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stderr[-3000:])
            return out.returncode
        rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "chunk": c})
        r = rows[-1]
        print(f"{r['glimpses']:>9,} glimpses  chunks of {c:>6,}  {r['runs']:>4} runs  {r['seconds']:8.1f} s  "
              f"python {r['python_mib']:7.1f} MiB  binary {r['binary_mib']:7.1f} MiB  "
              f"total {r['python_mib'] + r['binary_mib']:7.1f} MiB", flush=True)
    results = {}
    same_chunk = [r for r in rows if r["chunk"] == chunk]
    first, last = same_chunk[0], same_chunk[-1]
    if last["glimpses"] > first["glimpses"]:
        total = lambda r: r["python_mib"] + r["binary_mib"]  # noqa: E731
        ratio = total(last) / total(first)
        print(f"peak memory, {last['glimpses']:,} vs {first['glimpses']:,} glimpses: {ratio:.3f}x (target <= 1.1x); "
              f"{total(last) / 1024:.2f} GiB (target <= 2 GiB); chunks of {chunk:,} glimpses")
        results = {
            "peak_memory_long_vs_short": {"value": ratio, "target": "<= 1.1", "what":
                                          f"peak memory, {last['glimpses']:,} vs {first['glimpses']:,} glimpses"},
            "peak_memory_long_gib": {"value": total(last) / 1024, "target": "<= 2.0",
                                     "what": f"peak memory of {last['glimpses']:,} glimpses, GiB"}}
    lengths, per_run = sorted((r for r in rows if r["glimpses"] == longest), key=lambda r: r["chunk"]), None
    if len({r["runs"] for r in lengths}) > 1:
        import numpy as np

        per_run, rest = np.polyfit([r["runs"] for r in lengths], [r["seconds"] for r in lengths], 1)
        chunks = ", ".join(f"{r['chunk']:,}" for r in lengths)
        print(f"time per run of the binary, fitted over chunks of {chunks} glimpses: {per_run:.2f} s; "
              f"the stream's time at no runs: {rest:.1f} s")
        for r in lengths:
            print(f"  chunks of {r['chunk']:>6,}: {r['runs']:>4} runs at {per_run:.2f} s are "
                  f"{100 * per_run * r['runs'] / r['seconds']:5.1f} % "
                  f"of the stream's {r['seconds']:.1f} s")
    from neuroplastic.bench import record

    record("brian_stream", results, rows=rows, chunk=args.chunk,
           seconds_per_run=None if per_run is None else float(per_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
