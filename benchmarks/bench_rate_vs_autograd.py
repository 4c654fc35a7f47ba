"""Training throughput of the numpy engine (explicit CLAPP-s rule) vs torch autograd of the same losses.

    python benchmarks/bench_rate_vs_autograd.py [--threads N] [--layers 512 512] [--batch 64] ... [--breakdown]

A third worker, ``explicit_torch``, runs the explicit rule itself on torch tensors (the rate engine's
``[engine] array = "torch"``): the same code as the numpy worker, torch's kernels.

Both engines train the same dense network on the same glimpse batches with the
same layer-local CLAPP-s losses (a positive and ``--negatives`` rolled negative
pair sets, as ``clapp_sequences`` scores them; every layer's input detached) and
Adam, on the CPU, in float32, with the same number of threads (threadpoolctl for
numpy's BLAS, ``torch.set_num_threads`` for torch). Before timing, one step of
each engine from the same weights is compared. Each measurement runs in its own
fresh subprocess, the engines alternate ``--repeats`` times, and the script
prints a table and the median numpy/torch ratios of throughput and peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from _workers import (alternate_runs, print_libraries, report_ratios, run_worker, set_threads, time_steps,
                      worker_options)


# ---------------------------------------------------------------------------------------------
# data, pair sets and the two engines (imported lazily: the parent process stays light)

def make_batches(args, n_batches: int):
    """``n_batches`` float32 batches (B, T, patch*patch) of glimpse sequences."""
    import numpy as np
    rng = np.random.default_rng(args.seed)
    n_in = args.patch * args.patch
    if args.data == "random":
        return [rng.random((args.batch, args.T, n_in), dtype=np.float32) for _ in range(n_batches)]
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    from neuroplastic.stimuli import glimpse_grid
    stride = args.patch // 2
    side = 1
    while side * side < args.T:
        side += 1
    size = args.patch + (side - 1) * stride            # image side so that the grid has >= T glimpses
    digits = load_digits().images.astype(np.float32) / 16.0
    idx = rng.choice(len(digits), size=args.batch * n_batches, replace=len(digits) < args.batch * n_batches)
    images = np.stack([zoom(digits[i], size / 8.0, order=1) for i in idx]).astype(np.float32)
    patches = glimpse_grid(images, args.patch, stride).patches[:, :args.T]
    return [np.ascontiguousarray(patches[k * args.batch:(k + 1) * args.batch]) for k in range(n_batches)]


def make_pair_sets(args, n_steps: int):
    """The same shifts and weights for every engine: ClappStack.pair_sets with a fixed seed."""
    import numpy as np

    from neuroplastic.engines.numpy.clapp_stack import ClappStack
    rng = np.random.default_rng(args.seed + 1)
    net = ClappStack([1, 1], "clapp_s", {})
    return [net.pair_sets(args.batch, args.T, rng, args.negatives, 0.5) for _ in range(n_steps)]


def init_params(args, dtype="float32"):
    import numpy as np

    from neuroplastic.engines.numpy.clapp_stack import ClappStack
    sizes = [args.patch * args.patch, *args.layers]
    return ClappStack.init(sizes, "clapp_s", np.random.default_rng(args.seed + 2), dtype=dtype).params


class NumpyEngine:
    def __init__(self, args, params):
        from neuroplastic.engines.numpy.memory import retain_freed_memory
        from neuroplastic.engines.numpy.clapp_stack import ClappStack
        from neuroplastic.engines.numpy.optim import Adam
        retain_freed_memory()          # as the numpy engine's train() does
        self.net = ClappStack([args.patch * args.patch, *args.layers], "clapp_s", params)
        self.opt = Adam(args.lr)

    def step(self, x, shifts, weights):
        return self.net.train_batch(x, self.opt, shifts, weights).loss

    def params(self):
        return self.net.params


class ExplicitTorchEngine(NumpyEngine):
    """The explicit rule of the numpy worker on torch tensors: weights moved once, each batch as it comes."""

    def __init__(self, args, params):
        import torch
        super().__init__(args, {k: torch.from_numpy(v) for k, v in params.items()})
        self.torch = torch

    def step(self, x, shifts, weights):
        return super().step(self.torch.from_numpy(x), shifts, weights)


class TorchEngine:
    """torch autograd on the layer-local CLAPP-s losses of ``clapp_sequences``."""

    def __init__(self, args, params):
        import torch
        self.torch = torch
        self.n_layers = len(args.layers)
        self.p = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
        self.opt = torch.optim.Adam(list(self.p.values()), lr=args.lr)

    def losses(self, x, shifts, weights):
        torch = self.torch
        B = x.shape[0]
        out, h = [], x
        for l in range(self.n_layers):
            W, Wp = self.p[f"{l + 1}/W"], self.p[f"{l + 1}/W_pred"]
            h = h.detach()                                   # layer-local: no error crosses layers
            z = torch.relu(h @ W.T)                          # rates of all B*T glimpses, once
            d = z[:, :-1] @ Wp.T                             # dendritic prediction from the previous glimpse
            z_next = z[:, 1:]
            loss = 0.0
            for s, shift in enumerate(shifts):
                y = 1.0 if shift % B == 0 else -1.0
                u = (torch.roll(z_next, shift, dims=0) * d).sum(-1)
                loss = loss + (weights[s] * torch.relu(1 - y * u)).sum()
            out.append(loss)
            h = z
        return out

    def step(self, x, shifts, weights):
        torch = self.torch
        x = torch.from_numpy(x)
        weights = torch.from_numpy(weights.astype(x.numpy().dtype))
        self.opt.zero_grad(set_to_none=True)
        losses = self.losses(x, shifts, weights)
        torch.stack(losses).sum().backward()
        self.opt.step()
        return [v.item() for v in losses]

    def params(self):
        return {k: v.detach().numpy() for k, v in self.p.items()}


# ---------------------------------------------------------------------------------------------
# worker processes (memory and process helpers: _workers.py, shared with the other autograd benchmark)

def worker_time(args) -> dict:
    import copy

    import numpy as np
    Engine = {"numpy": NumpyEngine, "torch": TorchEngine, "explicit_torch": ExplicitTorchEngine}[args.worker]
    batches = make_batches(args, min(args.warmup + args.steps, 8))
    pair_sets = [(s, np.asarray(w, dtype=np.float32)) for s, w in make_pair_sets(args, args.warmup + args.steps)]
    tiny = copy.copy(args)
    tiny.layers = [4, 4]
    out = time_steps(args, build=lambda: Engine(args, init_params(args)),
                     inputs=lambda k: (batches[k % len(batches)], *pair_sets[k]),
                     build_tiny=lambda: Engine(tiny, init_params(tiny)))
    glimpses = args.batch * args.T
    return out | {"glimpses_per_s": glimpses / out["step_s"], "step_ms": 1e3 * out["step_s"],
                  "glimpses_per_s_mean": glimpses * len(out["step_s_all"]) / sum(out["step_s_all"])}


def breakdown(args) -> dict:
    """Where the numpy step's time goes (median ms over ``--steps``): the whole step, the rule's gradients
    of every layer (``clapp_sequences``), Adam, and the matrix products alone (the five per layer that the
    rule, and autograd of its losses, must make: somatic drive, prediction, two weight gradients, the error
    sent to the context), on arrays of the same shapes."""
    import statistics
    import time

    import numpy as np

    from neuroplastic.rules import clapp_sequences
    set_threads(args)
    engine = NumpyEngine(args, init_params(args))
    batches = make_batches(args, 4)
    pairs = [(s, np.asarray(w, dtype=np.float32)) for s, w in make_pair_sets(args, args.warmup + args.steps)]
    p, (B, T, n_in) = engine.params(), batches[0].shape
    grads = {k: np.full_like(v, 1e-3) for k, v in p.items()}
    sizes = [n_in, *args.layers]
    ones = [(np.ones((B * T, n), np.float32), np.ones((B * (T - 1), n), np.float32)) for n in sizes]

    def step(k):
        engine.step(batches[k % 4], *pairs[k])

    def rule(k):
        x = batches[k % 4]
        for l in range(len(args.layers)):
            x = clapp_sequences(p[f"{l + 1}/W"], p[f"{l + 1}/W_pred"], x, *pairs[k]).z

    def adam(k):
        engine.opt.step(p, grads)

    def products(k):
        for l in range(len(args.layers)):
            W, Wp = p[f"{l + 1}/W"], p[f"{l + 1}/W_pred"]
            x, _ = ones[l]
            z, c = ones[l + 1]
            c @ Wp.T, c.T @ c, c @ Wp                     # prediction, its weight gradient, error to the context
            x @ W.T, z.T @ x                              # somatic drive, W's gradient

    out = {}
    for name, f in (("step", step), ("rule", rule), ("adam", adam), ("products", products)):
        for k in range(args.warmup):
            f(k)
        times = []
        for k in range(args.warmup, args.warmup + args.steps):
            t0 = time.perf_counter()
            f(k)
            times.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(times)
    return out


def worker_check(args) -> dict:
    """One step of each engine from the same weights on the first batch, in float32 and in float64."""
    import numpy as np
    set_threads(args)
    import torch
    torch.set_num_threads(args.threads)

    from neuroplastic.rules import clapp_sequences
    out = {}
    for dtype in ("float32", "float64"):
        x = make_batches(args, 1)[0].astype(dtype)
        shifts, weights = make_pair_sets(args, 1)[0]
        weights = np.asarray(weights, dtype=dtype)
        p0 = init_params(args, dtype)
        ne, te = NumpyEngine(args, {k: v.copy() for k, v in p0.items()}), TorchEngine(args, p0)
        loss_n, loss_t = ne.step(x, shifts, weights), te.step(x, shifts, weights)
        pn, pt = ne.params(), te.params()
        res = {"shifts": shifts, "loss_numpy": loss_n, "loss_torch": loss_t, "params": {}}
        for k in p0:
            res["params"][k] = {"max_abs_diff": float(np.abs(pn[k] - pt[k]).max()),
                                "max_abs_update": float(np.abs(pn[k] - p0[k]).max()),
                                "n_off": int((np.abs(pn[k] - pt[k]) > 0.01 * args.lr).sum()), "size": p0[k].size}
        # the gradients themselves (before Adam's normalisation), relative to their size
        te2 = TorchEngine(args, p0)
        torch.stack(te2.losses(torch.from_numpy(x), shifts, torch.from_numpy(weights))).sum().backward()
        h = x
        for l in range(len(args.layers)):
            g = clapp_sequences(p0[f"{l + 1}/W"], p0[f"{l + 1}/W_pred"], h, shifts, weights)
            for name, gn in (("W", g.W), ("W_pred", g.W_pred)):
                gt = te2.p[f"{l + 1}/{name}"].grad.numpy()
                res["params"][f"{l + 1}/{name}"]["grad_rel_diff"] = float(np.abs(gn - gt).max() / np.abs(gt).max())
            h = g.z
        out[dtype] = res
    return out


# ---------------------------------------------------------------------------------------------
# parent

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--data", choices=["digits", "random"], default="digits",
                   help="digits: scikit-learn digits upsampled so that patch x patch glimpses on a grid "
                        "(stride patch/2) give T glimpses; random: uniform noise")
    p.add_argument("--patch", type=int, default=16, help="glimpse side: input size patch*patch")
    p.add_argument("--layers", type=int, nargs="+", default=[512, 512])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=9, help="glimpses per sequence")
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--breakdown", action="store_true",
                   help="only split the numpy step's time: the rule, Adam, and its matrix products alone")
    p.add_argument("--worker", choices=["numpy", "torch", "explicit_torch", "check"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.passthrough = worker_options(sys.argv[1:] if argv is None else argv, args.threads)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker == "check":
        print(json.dumps(worker_check(args)))
        return 0
    if args.worker:
        print(json.dumps(worker_time(args)))
        return 0

    n_in = args.patch * args.patch
    if args.breakdown:
        ms = breakdown(args)
        print(f"numpy CLAPP-s step, {n_in} -> {' -> '.join(map(str, args.layers))}, batch {args.batch} x T {args.T}, "
              f"float32, {args.threads} threads (median of {args.steps} steps):")
        print(f"  whole step {ms['step']:.1f} ms = the rule's gradients {ms['rule']:.1f} ms (of which matrix products "
              f"{ms['products']:.1f} ms, the rest {ms['rule'] - ms['products']:.1f} ms) + Adam {ms['adam']:.1f} ms "
              f"+ other {ms['step'] - ms['rule'] - ms['adam']:.1f} ms")
        return 0
    print("CLAPP-s training throughput: numpy engine (ClappStack.train_batch) vs torch autograd")
    print(f"network {n_in} -> {' -> '.join(map(str, args.layers))}, batch {args.batch}, T = {args.T} glimpses, "
          f"{args.negatives} negative set(s), data = {args.data}, float32, CPU, Adam lr {args.lr}")
    print(f"threads: {args.threads} for both (os.cpu_count() = {os.cpu_count()}); "
          f"OPENBLAS_CORETYPE = {os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per run, {args.repeats} alternating runs per engine")

    check = run_worker(__file__, args, "check")
    print("\nsame computation? one step of each engine (explicit rule + our Adam vs autograd + torch.optim.Adam)"
          " from the same weights on the same batch:")
    ok = True
    for dtype, res in ((k, check[k]) for k in ("float32", "float64")):
        print(f"  {dtype}: loss per layer numpy {['%.7f' % v for v in res['loss_numpy']]}  "
              f"torch {['%.7f' % v for v in res['loss_torch']]}")
        print(f"    {'param':<9} {'max|grad diff|/max|grad|':>25} {'max|W_numpy - W_torch|':>23} "
              f"{'max|update|':>12} {'entries off by > 1% of lr':>26}")
        for k, v in res["params"].items():
            print(f"    {k:<9} {v['grad_rel_diff']:>25.2e} {v['max_abs_diff']:>23.2e} {v['max_abs_update']:>12.2e} "
                  f"{v['n_off']:>16} of {v['size']:<7}")
        worst_grad = max(v["grad_rel_diff"] for v in res["params"].values())
        ok &= worst_grad < (1e-4 if dtype == "float32" else 1e-10)
        if dtype == "float64":
            ok &= max(v["max_abs_diff"] for v in res["params"].values()) < 1e-6 * args.lr
    print(f"  -> {'OK' if ok else 'MISMATCH'}: same gradients up to rounding; in float64 the updated weights agree to "
          f"< 1e-6 of the learning rate. In float32 a few weights can differ by a visible fraction of lr: Adam's "
          f"first step is lr * g / (|g| + 1e-8), so for entries with |g| ~ 1e-8 the float32 rounding of g "
          f"(relative 1e-7 of max|g|) is amplified.")
    if not ok:
        sys.exit("the two engines do not compute the same thing: not timing them")

    print("\nalternating runs (glimpses/s):")
    rows = alternate_runs(__file__, args, "glimpses_per_s", modes=("numpy", "torch", "explicit_torch"))
    print_libraries(rows)

    exact = all(x["exact_peak"] for x in rows)
    print("\nthroughput = B*T glimpses / median time of one training step (forward, gradients of every layer, "
          "Adam) over the timed steps; the mean-based figure is shown too (the median resists other load on the "
          "machine).")
    print("memory = peak resident set size (VmHWM) of the worker process during the timed steps minus its RSS "
          "just before the network was built" + (" (VmHWM reset to the current RSS through /proc/self/clear_refs "
          "after the warm-up steps, so it is the peak of the timed loop)" if exact else
          " (VmHWM could not be reset: lifetime peak, ru_maxrss semantics)") + ". Before the baseline each "
          "worker has imported its library, loaded the data and trained a tiny 4-4 network for two steps, so "
          "one-time runtime set-up (lazy imports such as torch.optim's, thread pools, BLAS buffers) is not "
          "counted. Counted, the same way for both: weights, gradients, optimiser state, every temporary of a "
          "step and what each library's allocator keeps. 'steady' = RSS after the warm-up steps, same baseline.")
    print("faults = minor page faults per timed step (fresh memory mapped in by the kernel; the numpy worker calls "
          "neuroplastic.engines.numpy.memory.retain_freed_memory(), as the numpy engine does, so that its temporaries are reused).")
    print("other load = CPU time used by other processes while the worker ran, as a fraction of all CPUs "
          "(should be ~0 %; if not, the timings of that run are distorted).")
    print(f"\n{'run':>3}  {'engine':<14} {'glimpses/s':>11} {'(mean)':>8} {'ms/step':>8} {'peak MiB':>9} "
          f"{'steady MiB':>11} {'faults':>7} {'other load':>11}")
    for x in rows:
        load = f"{100 * x['other_load']:>10.0f}%" if "other_load" in x else f"{'?':>11}"
        print(f"{x['rep']:>3}  {x['engine']:<14} {x['glimpses_per_s']:>11.0f} {x['glimpses_per_s_mean']:>8.0f} "
              f"{x['step_ms']:>8.1f} {x['peak_mib']:>9.1f} {x['steady_mib']:>11.1f} {x['minflt_per_step']:>7.0f} {load}")

    import statistics
    med = {e: {k: statistics.median(x[k] for x in rows if x["engine"] == e) for k in ("glimpses_per_s", "peak_mib")}
           for e in ("numpy", "torch", "explicit_torch")}
    print(f"\nmedian  numpy {med['numpy']['glimpses_per_s']:.0f} glimpses/s, {med['numpy']['peak_mib']:.1f} MiB;  "
          f"torch {med['torch']['glimpses_per_s']:.0f} glimpses/s, {med['torch']['peak_mib']:.1f} MiB;  "
          f"explicit rule on torch {med['explicit_torch']['glimpses_per_s']:.0f} glimpses/s, "
          f"{med['explicit_torch']['peak_mib']:.1f} MiB")
    by_rep = {(x["rep"], x["engine"]): x for x in rows}
    on_torch = [by_rep[r, "explicit_torch"]["glimpses_per_s"] / by_rep[r, "torch"]["glimpses_per_s"]
                for r in range(1, args.repeats + 1)]
    print(f"throughput ratio explicit rule on torch / torch autograd: median {statistics.median(on_torch):.2f} "
          f"(per run: {', '.join('%.2f' % v for v in on_torch)})")
    report_ratios([x for x in rows if x["engine"] in ("numpy", "torch")], "glimpses_per_s", "rate_vs_autograd", "dense CLAPP-s training step, same threads",
                  network=[n_in, *args.layers], batch=args.batch, T=args.T)
    return 0


if __name__ == "__main__":
    sys.exit(main())
