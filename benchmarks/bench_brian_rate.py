"""Brian2 rate network: compile-once-then-re-run, and the same learning in the numpy engine.

    python benchmarks/bench_brian_rate.py [--glimpses 8000] [--layers 64 64]

Measured side by side in one run, on the same network (16 -> layers) and the same glimpse stream:
(b) the first cpp_standalone run (code generation + compilation + run) vs a re-run with new run_args
    (new stimulus, weights, learning rate): the re-run must be >= 10x faster;
(c) the Brian2 rate network (a cpp_standalone re-run, one time step per glimpse, synapses learning at
    each saccade event) vs the numpy reference on the same stream (rate/stream.py, one update per
    glimpse) and vs the numpy engine's batched CLAPP-s step over the same number of glimpses.
The final weights of (c)'s two online versions are compared too.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import neuroplastic.engines.brian  # noqa: F401
from neuroplastic.bench import record
from neuroplastic.engines.brian.device import Simulator
from neuroplastic.engines.brian.network import build
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.optim import SGD
from neuroplastic.engines.numpy.stream import train_stream

# tests/helpers.py holds the random test problems that the tests use too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import random_problem  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--glimpses", type=int, default=8000)
    p.add_argument("--layers", type=int, nargs="+", default=[64, 64])
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    import brian2 as b2

    os.environ["NEUROPLASTIC_BUILD_DIR"] = tempfile.mkdtemp(prefix="np-bench-")   # a cold build
    sizes = [16, *args.layers]
    L = args.glimpses
    params, x, y = random_problem(sizes, L, pred_init_scale=0.1)
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    syn = load_model(MODELS_DIR / "clapp_synapses.toml")

    def make(x, y, p, eta):
        return build(neuron, syn, sizes, False, x, y, p, eta, 50 * b2.ms)

    sim = Simulator("cpp", {"bench": sizes, "length": L})
    t0 = time.perf_counter()
    net = sim.run(make, x, y, params, args.lr)
    first = time.perf_counter() - t0
    sim.release(net)
    x2 = random_problem(sizes, L, seed=1)[1]
    t0 = time.perf_counter()
    net = sim.run(make, x2, y, params, args.lr)
    rerun = time.perf_counter() - t0
    brian_w = net.weights()
    sim.release(net)

    ref = ClappStack(sizes, "clapp_s", {k: v.copy() for k, v in params.items()})
    t0 = time.perf_counter()
    train_stream(ref, x2, y, args.lr)
    numpy_stream = time.perf_counter() - t0
    diff = max(np.abs(brian_w[k] - ref.params[k]).max() / np.abs(ref.params[k]).max() for k in brian_w)

    batch = ClappStack(sizes, "clapp_s", {k: v.astype("float32") for k, v in params.items()})
    n_seq = L // 9 // 64 * 64                                  # whole batches of 64 sequences of 9 glimpses
    xb = x2[: n_seq * 9].astype("float32").reshape(-1, 64, 9, 16)
    opt = SGD(args.lr)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for xbatch in xb:
        shifts, weights = batch.pair_sets(64, 9, rng, 1, 0.5)
        batch.train_batch(xbatch, opt, shifts, weights)
    numpy_batch = (time.perf_counter() - t0) * L / (len(xb) * 64 * 9)

    print(f"network 16 -> {' -> '.join(map(str, args.layers))}, stream of {L} glimpses, CLAPP-s, rate variant")
    print(f"(b) first cpp_standalone run (codegen + compile + run): {first:8.2f} s")
    print(f"    re-run with new run_args (stimulus, weights, eta):   {rerun:8.3f} s   -> {first / rerun:7.1f}x faster "
          f"(target >= 10x)")
    print(f"(c) Brian2 rate network, cpp re-run:                     {rerun:8.3f} s   {L / rerun:10.0f} glimpses/s")
    print(f"    numpy online reference (same stream, per glimpse):  {numpy_stream:8.3f} s   {L / numpy_stream:10.0f} "
          f"glimpses/s   ratio Brian/numpy-online time {rerun / numpy_stream:.2f}")
    print(f"    numpy engine, batched CLAPP-s (batch 64, float32):   {numpy_batch:8.3f} s   {L / numpy_batch:10.0f} "
          f"glimpses/s   ratio Brian/numpy-batch time {rerun / numpy_batch:.2f}")
    print(f"    max |W_brian - W_numpy| / max |W_numpy| after the stream: {diff:.1e}")
    record("brian_rate", {
        "first run / re-run time": {"value": first / rerun, "target": "", "what": "compile once, then re-run"},
        "Brian2 / numpy online time": {"value": rerun / numpy_stream, "target": "",
                                       "what": "cpp re-run vs the numpy one-update-per-glimpse reference"},
        "Brian2 / numpy batched time": {"value": rerun / numpy_batch, "target": "",
                                        "what": "cpp re-run vs the batched numpy engine"},
        "weight difference Brian2 vs numpy": {"value": diff, "target": "<= 1e-6",
                                              "what": "max |W_brian - W_numpy| / max |W_numpy|"}},
        glimpses=L, layers=args.layers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
