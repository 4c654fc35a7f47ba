"""Benchmark the spiking CLAPP network (cpp_standalone).

(a) run time of the plastic spiking network (neuroplastic.engines.brian.spiking.build, no monitors) vs a plain
    Brian2 network with the same neurons (Bernoulli inputs, escape-noise LIF layers with a leaky dendrite), the
    same synapses (feed-forward; lateral W_pred into the dendrite, delayed by one glimpse; score) and no
    plasticity, same duration and device; the binary's own network-run time (``device._last_run_time``), min
    over repetitions. Target <= 1.5x.
    Also: the synaptic events of the run (the plain network counts its spikes; times their targets), the
    time per event of both networks, and the share of the plastic network's time spent in the
    once-per-glimpse learning code (Brian2's profiler, one more build).
(b) correlation of the spiking network's dW, dW_pred (per layer) with the rate rule
    (neuroplastic.engines.numpy.stream.train_stream) on the same stream and initial weights.

usage: python benchmarks/bench_brian_spiking.py [--sizes 16,64,64] [--glimpses 200] [--glimpse-ms 200]
                                                [--dt-ms 0.1] [--reps 3] [--eta 0.002]
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
from neuroplastic.rules.retinotopic import Layout
from neuroplastic.engines.brian.spiking import build, constants
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.stream import train_stream

# tests/helpers.py holds the random test problems that the tests use too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import random_problem  # noqa: E402

PLAIN_LAYER = """
dIs/dt = -Is / tau_s : 1
dv/dt = (Is - v) / tau_m : 1
dd/dt = -d / tau_d : 1
nz : 1
"""


def problem(sizes, T, seed=0):
    return random_problem(sizes, T, "clapp_s", seed, offset=0.8)


def build_plain(neuron, sizes, x, params, glimpse, dt):
    import brian2 as b2

    k = int(round(float(glimpse / dt)))
    ns = {"stimulus": b2.TimedArray(x, dt=glimpse, name="stimulus"), "steps_per_glimpse": k, **constants(neuron)}
    clock = b2.Clock(dt=dt, name="spike_clock")
    inp = b2.NeuronGroup(sizes[0], "x = stimulus(t, i) : 1\nnz : 1", threshold="rand() < rate_in * x * dt",
                         reset="nz += 1", clock=clock, name="input", namespace=ns)
    objs, pre, pre_rate = [inp], inp, "rate_in"
    for l, n in enumerate(sizes[1:]):
        lay = b2.NeuronGroup(n, PLAIN_LAYER, threshold=neuron.get("spiking.layer.threshold"), reset="nz += 1",
                             clock=clock, name=f"layer{l + 1}", namespace=ns, method="exact")
        mod = b2.NeuronGroup(1, "u : 1", clock=clock, name=f"modulator{l + 1}", namespace=ns)
        ff = b2.Synapses(pre, lay, "w : 1", on_pre=f"Is_post += w / ({pre_rate} * tau_s)", clock=clock,
                         name=f"ff{l + 1}", namespace=ns)
        wiring = Layout.dense(pre.N, n)         # all to all, in the order the plastic network's builder uses
        post, p = wiring.connections("W")
        ff.connect(i=p, j=post)
        ff.w = params[f"{l + 1}/W"][post, p]
        pred = b2.Synapses(lay, lay, "w : 1", on_pre="d_post += w / (rate_out * tau_d)", clock=clock,
                           name=f"pred{l + 1}", namespace=ns, delay=glimpse)
        post, p = wiring.connections("W_pred")
        pred.connect(i=p, j=post)
        pred.w = params[f"{l + 1}/W_pred"][post, p]
        score = b2.Synapses(lay, mod, on_pre="u_post += 1", clock=clock, name=f"score{l + 1}", namespace=ns)
        score.connect()
        objs += [lay, mod, ff, pred, score]
        pre, pre_rate = lay, "rate_out"
    return b2.Network(*objs), ns


def synaptic_events(network, sizes) -> float:
    """Spikes delivered over the run: every spike of a group times its targets (ff, pred and score synapses).

    Read from the plain network's spike counters ``nz``, which count every spike of the run.
    """
    counts = [float(np.sum(network[name].nz[:])) for name in ["input"] + [f"layer{l}" for l in range(1, len(sizes))]]
    events = counts[0] * sizes[1]
    for l, n in enumerate(sizes[1:], start=1):
        events += counts[l] * ((sizes[l + 1] if l + 1 < len(sizes) else 0) + n + 1)
    return events


def learning_fraction(profile) -> float:
    """The share of the profiled run spent in the once-per-glimpse learning code (the ``learn`` pathways)."""
    total = sum(float(t) for _, t in profile)
    return sum(float(t) for name, t in profile if "_learn" in name) / total


def timed(kind, neuron, synapses, sizes, x, y, params, eta, glimpse_ms, dt_ms, reps, root, profile=False):
    import brian2 as b2
    from brian2.devices import reinit_devices

    reinit_devices()
    b2.set_device("cpp_standalone", build_on_run=False)
    b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", str(os.cpu_count() or 1)]
    b2.seed(1)
    glimpse, dt = glimpse_ms * b2.ms, dt_ms * b2.ms
    if kind == "plastic":
        net = build(neuron, synapses, sizes, False, x, y, params, eta, glimpse, dt=dt, monitors=False)
        network, ns = net.network, net.namespace
    else:
        network, ns = build_plain(neuron, sizes, x, params, glimpse, dt)
        net = None
    network.run(len(x) * glimpse, namespace=ns, profile=profile)
    t0 = time.time()
    b2.device.build(directory=os.path.join(root, kind + ("_profiled" if profile else "")), run=False)
    t_build = time.time() - t0
    inner, wall = [], []
    for r in range(reps):
        t0 = time.time()
        # (Brian2 reads the profile from the folder "results" whatever the run's results folder.)
        b2.device.run(results_directory="results" if profile else f"results_{r}")
        wall.append(time.time() - t0)
        inner.append(b2.device._last_run_time)
    out = {"build": t_build, "inner": min(inner), "wall": min(wall)}
    if net is not None:
        out["weights"] = net.weights()
    else:
        out["events"] = synaptic_events(network, sizes)
    if profile:
        out["profile"] = list(network.profiling_info)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="16,64,64")
    ap.add_argument("--glimpses", type=int, default=200)
    ap.add_argument("--glimpse-ms", type=float, default=200.0)
    ap.add_argument("--dt-ms", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--eta", type=float, default=0.002)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    neuron = load_model(MODELS_DIR / "two_compartment.toml")
    synapses = load_model(MODELS_DIR / "clapp_synapses.toml")
    params, x, y = problem(sizes, a.glimpses)
    bio = a.glimpses * a.glimpse_ms / 1000
    print(f"sizes {sizes}, {a.glimpses} glimpses x {a.glimpse_ms:g} ms = {bio:g} s simulated, dt {a.dt_ms} ms, "
          f"cpp_standalone, {os.cpu_count()} cores")
    res = {}
    with tempfile.TemporaryDirectory() as root:
        for kind in ("plain", "plastic"):
            r = res[kind] = timed(kind, neuron, synapses, sizes, x, y, params, a.eta, a.glimpse_ms, a.dt_ms,
                                  a.reps, root)
            print(f"  {kind:8s} build {r['build']:6.1f} s   network run {r['inner']:.3f} s   device.run wall "
                  f"{r['wall']:.3f} s (min of {a.reps})")
        # Brian2's profiler (another build, timed once): where the plastic network's time goes.
        profiled = timed("plastic", neuron, synapses, sizes, x, y, params, a.eta, a.glimpse_ms, a.dt_ms, 1, root,
                         profile=True)
    ratio = res["plastic"]["inner"] / res["plain"]["inner"]
    events = res["plain"]["events"]
    n_syn = sum(w.size for w in res["plastic"]["weights"].values())
    learn = learning_fraction(profiled["profile"])
    print(f"(a) ratio plastic / plain: network run {ratio:.2f}x, "
          f"wall {res['plastic']['wall'] / res['plain']['wall']:.2f}x   (target <= 1.5x)")
    print(f"    {events:.3g} synaptic events ({events / bio:.3g} per simulated s): "
          f"{1e9 * res['plain']['inner'] / events:.1f} ns per event (plain), "
          f"{1e9 * res['plastic']['inner'] / events:.1f} ns (plastic)")
    # The profiler's timers cost the same per code object and step, so its shares, not its total, are used.
    print(f"    once-per-glimpse learning ({n_syn:,} plastic synapses, {a.glimpses} glimpses): {100 * learn:.1f} % "
          f"of the profiled run ({profiled['inner']:.3f} s with the profiler's timers), i.e. about "
          f"{1e9 * learn * res['plastic']['inner'] / (n_syn * a.glimpses):.2f} ns per synapse and glimpse")
    learned = res["plastic"]["weights"]
    ref = ClappStack(sizes, "clapp_s", {k: v.copy() for k, v in params.items()})
    train_stream(ref, x, y, a.eta)
    print(f"(b) corr(dW spiking, dW rate rule), eta {a.eta}:")
    ratios = {"plastic / plain network run": {"value": ratio, "target": "<= 1.5",
                                              "what": "cost of plasticity in the spiking network"},
              "ns per synaptic event (plastic)": {"value": 1e9 * res["plastic"]["inner"] / events, "target": "",
                                                  "what": "network run / spikes x targets"},
              "learning fraction of the run": {"value": learn, "target": "",
                                               "what": "the learn pathways' share of the profiled run"}}
    for key in learned:
        ds, dr = learned[key] - params[key], ref.params[key] - params[key]
        corr = np.corrcoef(ds.ravel(), dr.ravel())[0, 1]
        print(f"  {key:10s} corr {corr:.3f}   |dW_spk| / |dW_rate| {np.linalg.norm(ds) / np.linalg.norm(dr):.2f}")
        ratios[f"corr(dW spiking, dW rate) {key}"] = {"value": float(corr), "target": "",
                                                      "what": "same stream and start"}
    record("brian_spiking", ratios, sizes=sizes, glimpses=a.glimpses, glimpse_ms=a.glimpse_ms)


if __name__ == "__main__":
    main()
