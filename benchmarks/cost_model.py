"""The cost of a compiled spiking CLAPP run, term by term: per time step, per neuron update, per synaptic
event and per plastic synapse at each glimpse's learning (cpp_standalone, one core).

    python benchmarks/cost_model.py [--configs 16,64,64:100 16,256,256:100 16,128,128,128:100 16,256,256:25]
                                    [--glimpses 40] [--dt-ms 0.1] [--reps 2]

Each configuration ``SIZES:GLIMPSE_MS`` runs the plastic spiking network of ``bench_brian_spiking`` for
``--glimpses`` glimpses (its binary's own network-run time, the fastest of ``--reps``), and the plain network of
the same neurons, synapses and rates once, whose spike counters give the synaptic events (every spike times its
targets). The run times are fitted, by non-negative least squares relative to each time, with

    T = steps c_step + neuron_updates c_neuron + events c_event + synapses x glimpses c_learn

(``neuron_updates`` = neurons x steps; ``synapses`` the plastic ones, updated once per glimpse). Changing the
sizes moves the neuron, event and learning work; changing the glimpse length at one size moves the learning
against the rest. Printed: the four constants, each configuration's measured and fitted time and how its time
splits over the four terms.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_brian_spiking import problem, timed  # noqa: E402

from neuroplastic.models import load_model  # noqa: E402
from neuroplastic.protocol import MODELS_DIR  # noqa: E402

TERMS = ("step", "neuron update", "synaptic event", "synapse and glimpse")


def measure(config: str, args, root: str, neuron, synapses) -> dict:
    """One configuration: the plastic run's time and the work of each term (events from the plain network)."""
    text, glimpse_ms = config.split(":")
    sizes, glimpse_ms = [int(n) for n in text.split(",")], float(glimpse_ms)
    params, x, y = problem(sizes, args.glimpses)
    common = (neuron, synapses, sizes, x, y, params, args.eta, glimpse_ms, args.dt_ms)
    events = timed("plain", *common, 1, root)["events"]
    run = timed("plastic", *common, args.reps, root)["inner"]
    steps = int(round(args.glimpses * glimpse_ms / args.dt_ms))
    work = [steps, sum(sizes) * steps, events, sum(w.size for w in params.values()) * args.glimpses]
    return {"config": config, "run": run, "work": work}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+",
                   default=["16,32,32:25", "16,64,64:100", "16,256,256:100", "16,128,128,128:100",
                            "16,256,256:25", "16,256,256:400", "16,512,512:50"],
                   help="SIZES:GLIMPSE_MS of each run (at least four)")
    p.add_argument("--glimpses", type=int, default=40)
    p.add_argument("--dt-ms", type=float, default=0.1)
    p.add_argument("--reps", type=int, default=2, help="runs of each plastic binary (the fastest counts)")
    p.add_argument("--eta", type=float, default=0.002)
    args = p.parse_args(argv)
    if len(args.configs) < len(TERMS):
        p.error(f"--configs: {len(args.configs)} given; the model has {len(TERMS)} constants, so give at least "
                f"{len(TERMS)}")
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    synapses = load_model(MODELS_DIR / "clapp_synapses.toml")
    print(f"{args.glimpses} glimpses per configuration, dt {args.dt_ms} ms, cpp_standalone, {os.cpu_count()} cores")
    runs = []
    with tempfile.TemporaryDirectory() as root:
        for k, config in enumerate(args.configs):
            os.makedirs(os.path.join(root, str(k)))
            runs.append(measure(config, args, os.path.join(root, str(k)), neuron, synapses))
            r = runs[-1]
            print(f"  {config:22s} network run {r['run']:7.3f} s   " + "  ".join(
                f"{w:.3g} {t}s" for w, t in zip(r["work"], TERMS)), flush=True)
    A = np.array([r["work"] for r in runs], dtype=float)
    T = np.array([r["run"] for r in runs])
    # relative least squares (every configuration weighs alike, however long it ran), no constant below 0
    from scipy.optimize import nnls
    c, _ = nnls(A / T[:, None], np.ones(len(T)))
    print("\nconstants (non-negative least squares over the configurations; 0: below what the runs resolve):")
    for value, term in zip(c, TERMS):
        print(f"  {1e9 * value:10.2f} ns per {term}")
    print("\nconfiguration           measured     fitted   " + "  ".join(f"{t:>20s}" for t in TERMS))
    for r, row in zip(runs, A):
        parts = row * c
        print(f"  {r['config']:22s} {r['run']:7.3f} s  {parts.sum():7.3f} s   "
              + "  ".join(f"{100 * v / parts.sum():19.1f}%" for v in parts))
    worst = float(np.max(np.abs(A @ c / T - 1)))
    print(f"\nlargest misfit: {100 * worst:.1f} % of a configuration's time")
    from neuroplastic.bench import record

    record("cost_model", {"largest misfit": {"value": worst, "target": "", "what": "of a configuration's time, fitted vs measured"}},
           constants_ns={t: 1e9 * v for t, v in zip(TERMS, c)}, runs=runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
