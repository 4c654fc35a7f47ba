"""Training step of the VGG-6 CLAPP-s encoder: explicit numpy rule vs torch autograd of the same losses.

    python benchmarks/bench_conv_vs_autograd.py [--threads 2] [--width 1.0] [--batch 32] [--score location] ...

The paper's vision setting (science page of the docs, CLAPP): batches of 32 grey 64 x 64 images, each
a 7 x 7 grid of 16 x 16 patches (stride 8), encoded by VGG-6 ([128, 256, M, 256,
512, M, 1024, M, 1024, M]); every conv layer is its own CLAPP-s learner (score per
location of its output map by default; ``--score patch`` scores the patch mean as
the authors' code does), predicting the patches ``--offsets`` rows below (paper:
2 .. 6, one W_pred each) against ``--negatives`` saccade sets. Both engines take one
Adam step of every layer per batch, on the CPU, in float32, with the same number of
threads (threadpoolctl for numpy's BLAS, ``torch.set_num_threads``):

  numpy  ``ConvClappStack.train_batch`` (im2col convolutions, explicit gradients, rate.optim.Adam);
  torch  the same per-layer losses (every layer's input detached) through autograd and
         torch.optim.Adam; NCHW ``F.conv2d`` / ``F.max_pool2d``, the scores through the same shared
         B x B score matrix per location; ``--torch-backward sum`` (default) calls backward once on
         the sum of the layer losses, ``per-layer`` after each layer (frees each graph early).

Before timing, one step of each engine from the same weights is compared (on a
reduced copy of the network, ``--check-width``, ``--check-batch``, float32 and
float64). Every measurement runs in its own fresh subprocess; the engines
alternate ``--repeats`` times; the script prints a table and the median
numpy/torch ratios of throughput and of peak memory (peak RSS increase of the
worker during the timed steps over its RSS before the network was built).
``--width`` scales every layer's channel count (default 1.0 = the paper's size).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from _workers import (alternate_runs, print_libraries, report_ratios, run_worker, set_threads, time_steps,
                      worker_options)

#: float32 tolerance of max|grad diff|/max|grad|: max-pool near-ties route the error differently (see the check).
FLOAT32_GRAD_TOL = 1e-2


# ---------------------------------------------------------------------------------------------
# data, pair sets and the two engines (imported lazily: the parent process stays light)

def architecture(width: float):
    from neuroplastic.rules.architectures import VGG6
    return [c if c == "M" else max(1, int(round(c * width))) for c in VGG6]


def make_batches(args, n_batches: int, batch: int):
    """``n_batches`` float32 patch grids (B, G, G, patch, patch) cut from grey image crops."""
    import numpy as np

    from neuroplastic.stimuli.glimpses import patch_grid
    rng = np.random.default_rng(args.seed)
    n = batch * n_batches
    if args.data == "random":
        images = rng.random((n, args.image, args.image), dtype=np.float32)
    else:
        from neuroplastic.data.images import natural_images
        ds = natural_images(crop=args.image, per_image=max(8, -(-n // 12)), downsample=1)
        images = np.asarray(ds.samples)[rng.choice(len(ds.samples), n, replace=False)].astype(np.float32)
    grid = patch_grid(images, args.patch, args.patch // 2)[..., 0]
    return [np.ascontiguousarray(grid[k * batch:(k + 1) * batch]) for k in range(n_batches)]


def make_net(args, width, dtype="float32"):
    import numpy as np

    from neuroplastic.engines.numpy.conv_stack import ConvClappStack
    return ConvClappStack.init(architecture(width), 1, "clapp_s", np.random.default_rng(args.seed + 2),
                               offsets=args.offsets, dtype=dtype, score=args.score)


def make_pair_sets(args, n_steps: int, batch: int, grid: int):
    """The same shifts and weights for every engine: ConvClappStack.pair_sets with a fixed seed."""
    import numpy as np

    from neuroplastic.engines.numpy.conv_stack import ConvClappStack
    rng = np.random.default_rng(args.seed + 1)
    net = ConvClappStack(architecture(1.0), 1, "clapp_s", {}, offsets=args.offsets, score=args.score)
    return [net.pair_sets(batch, grid, grid, rng, args.negatives, 0.5) for _ in range(n_steps)]


class NumpyEngine:
    def __init__(self, args, net):
        from neuroplastic.engines.numpy.memory import retain_freed_memory
        from neuroplastic.engines.numpy.optim import Adam
        retain_freed_memory()          # as the numpy engine's train() does
        self.net = net
        self.opt = Adam(args.lr)

    def step(self, x, shifts, weights):
        return self.net.train_batch(x, self.opt, shifts, weights).loss

    def params(self):
        return self.net.params


class TorchEngine:
    """torch autograd on the layer-local losses of ``ConvClappStack`` (NCHW kernels (C, C_in, 3, 3))."""

    def __init__(self, args, net):
        import torch
        self.torch = torch
        self.net = net
        self.per_layer = args.torch_backward == "per-layer"
        self.p = {}
        for k, v in net.params.items():
            v = v.transpose(0, 3, 1, 2) if k.endswith("/W") else v
            self.p[k] = torch.nn.Parameter(torch.from_numpy(v.copy()))
        self.opt = torch.optim.Adam(list(self.p.values()), lr=args.lr)

    def layer_loss(self, l, h, shifts, weights):
        """Loss of layer ``l`` from its (detached) input maps h (B G G, C_in, P, P); returns (loss, output)."""
        torch, F, net = self.torch, self.torch.nn.functional, self.net
        B, Gr, Gc = weights.shape[2:]
        z = torch.relu(F.conv2d(h.detach(), self.p[f"{l + 1}/W"], stride=net.stride, padding=net.padding))
        if net.layers[l].pool:
            z = F.max_pool2d(z, 2)
        q = z.mean(dim=(2, 3), keepdim=True) if net.score == "patch" else z
        n_l, C = q.shape[2] * q.shape[3], q.shape[1]
        qT = q.reshape(B, Gr, Gc, C, n_l).permute(1, 2, 4, 0, 3)             # G_r, G_c, n_l, B, C
        b = torch.arange(B)
        loss = 0.0
        for kappa, k in enumerate(net.offsets):
            R = Gr - k
            d = qT[:R] @ self.p[f"{l + 1}/W_pred"][kappa].T                      # dendritic prediction
            U = qT[k:] @ d.transpose(-1, -2)                                 # all scores of a location
            w = weights[kappa][:, :, :R, :].permute(0, 2, 3, 1)[:, :, :, None, :] / n_l
            for s, shift in enumerate(shifts):
                y = 1.0 if shift % B == 0 else -1.0
                u = U[..., (b - shift) % B, b]
                loss = loss + (w[s] * torch.relu(1 - y * u)).sum()
        return loss, z

    def losses(self, x, shifts, weights):
        out, h = [], x.reshape(-1, *x.shape[3:], 1).permute(0, 3, 1, 2)
        for l in range(self.net.n_layers):
            loss, h = self.layer_loss(l, h, shifts, weights)
            if self.per_layer:
                loss.backward()
                h = h.detach()
                loss = loss.detach()
            out.append(loss)
        return out

    def step(self, x, shifts, weights):
        torch = self.torch
        x = torch.from_numpy(x)
        weights = torch.from_numpy(weights.astype(x.numpy().dtype))
        self.opt.zero_grad(set_to_none=True)
        losses = self.losses(x, shifts, weights)
        if not self.per_layer:
            torch.stack(losses).sum().backward()
        self.opt.step()
        return [v.item() for v in losses]

    def params(self):
        return {k: (v.detach().numpy().transpose(0, 2, 3, 1) if k.endswith("/W") else v.detach().numpy())
                for k, v in self.p.items()}


# ---------------------------------------------------------------------------------------------
# worker processes (memory and process helpers: _workers.py, shared with the other autograd benchmark)

def worker_time(args) -> dict:
    import numpy as np
    Engine = NumpyEngine if args.worker == "numpy" else TorchEngine
    batches = make_batches(args, min(args.warmup + args.steps, 4), args.batch)
    grid = batches[0].shape[1]
    pair_sets = [(s, np.asarray(w, dtype=np.float32))
                 for s, w in make_pair_sets(args, args.warmup + args.steps, args.batch, grid)]
    tiny_pairs = make_pair_sets(args, 1, 4, grid)[0]
    out = time_steps(args, build=lambda: Engine(args, make_net(args, args.width)),
                     inputs=lambda k: (batches[k % len(batches)], *pair_sets[k]),
                     build_tiny=lambda: Engine(args, make_net(args, 1 / 64)),
                     tiny_inputs=lambda k: (batches[0][:4], *tiny_pairs))
    return out | {"images_per_s": args.batch / out["step_s"]}


def worker_check(args) -> dict:
    """One step of each engine from the same weights on a reduced network, in float32 and in float64."""
    import numpy as np
    set_threads(args)
    import torch
    torch.set_num_threads(args.threads)

    from neuroplastic.rules.conv_clapp import conv_clapp_layer
    out = {}
    x32 = make_batches(args, 1, args.check_batch)[0]
    grid = x32.shape[1]
    shifts, weights = make_pair_sets(args, 1, args.check_batch, grid)[0]
    for dtype in ("float32", "float64"):
        x = x32.astype(dtype)
        w = np.asarray(weights, dtype=dtype)
        net_n, net_t = make_net(args, args.check_width, dtype), make_net(args, args.check_width, dtype)
        p0 = {k: v.copy() for k, v in net_n.params.items()}
        ne, te = NumpyEngine(args, net_n), TorchEngine(args, net_t)
        loss_n, loss_t = ne.step(x, shifts, w), te.step(x, shifts, w)
        pn, pt = ne.params(), te.params()
        res = {"loss_numpy": loss_n, "loss_torch": loss_t, "params": {}}
        for k in p0:
            res["params"][k] = {"max_abs_diff": float(np.abs(pn[k] - pt[k]).max()),
                                "max_abs_update": float(np.abs(pn[k] - p0[k]).max()), "size": p0[k].size}
        # the gradients themselves (before Adam's normalisation), relative to their size
        te2 = TorchEngine(args, make_net(args, args.check_width, dtype))
        layer_losses = te2.losses(torch.from_numpy(x), shifts, torch.from_numpy(w))
        if not te2.per_layer:                   # (per-layer: losses() has already called backward)
            torch.stack(layer_losses).sum().backward()
        h = x[..., None]
        for l in range(net_n.n_layers):
            g = conv_clapp_layer(p0[f"{l + 1}/W"], p0[f"{l + 1}/W_pred"], h, net_n.offsets, shifts, w, score=net_n.score,
                           pool=net_n.layers[l].pool)
            for name, gn in (("W", g.W), ("W_pred", g.W_pred)):
                gt = te2.p[f"{l + 1}/{name}"].grad.numpy()
                gt = gt.transpose(0, 2, 3, 1) if name == "W" else gt
                res["params"][f"{l + 1}/{name}"]["grad_rel_diff"] = float(np.abs(gn - gt).max() / np.abs(gt).max())
            h = g.z
        out[dtype] = res
    return out


# ---------------------------------------------------------------------------------------------
# parent

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--width", type=float, default=1.0, help="scale of every layer's channel count (1 = VGG-6)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image", type=int, default=64, help="image side (grey)")
    p.add_argument("--patch", type=int, default=16, help="patch side; the grid stride is patch / 2")
    p.add_argument("--data", choices=["natural", "random"], default="natural",
                   help="natural: grey crops of scikit-image's photographs; random: uniform noise")
    p.add_argument("--score", choices=["location", "patch"], default="location")
    p.add_argument("--offsets", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    p.add_argument("--negatives", type=int, default=16)
    p.add_argument("--torch-backward", choices=["sum", "per-layer"], default="sum")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--check-width", type=float, default=1 / 16)
    p.add_argument("--check-batch", type=int, default=4)
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=["numpy", "torch", "check"], help=argparse.SUPPRESS)
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

    arch = architecture(args.width)
    grid = (args.image - args.patch) // (args.patch // 2) + 1
    print("CLAPP-s conv encoder, one training step: numpy (explicit rule) vs torch autograd, CPU, float32")
    print(f"encoder {arch} (width x{args.width:g}{', the paper' if args.width == 1 else ''}), batch {args.batch} "
          f"grey {args.image}x{args.image} images = {grid}x{grid} grid of {args.patch}x{args.patch} patches "
          f"(stride {args.patch // 2}), {args.batch * grid * grid} patches per batch, data = {args.data}")
    print(f"rule: score per {args.score}, row offsets {args.offsets} (one W_pred each), 1 positive + "
          f"{args.negatives} negative sets, Adam lr {args.lr}; torch backward: {args.torch_backward}")
    print(f"threads: {args.threads} for both (os.cpu_count() = {os.cpu_count()}); "
          f"{args.warmup} warm-up + {args.steps} timed steps per run, {args.repeats} alternating run(s) per engine")

    if not args.no_check:
        check = run_worker(__file__, args, "check")
        print(f"\nsame computation? one step of each engine from the same weights on the same batch, on a reduced "
              f"copy (width x{args.check_width:g}: {architecture(args.check_width)}, batch {args.check_batch}):")
        ok = True
        for dtype in ("float32", "float64"):
            res = check[dtype]
            print(f"  {dtype}: loss per layer numpy {['%.6f' % v for v in res['loss_numpy']]}")
            print(f"  {'':7}                torch {['%.6f' % v for v in res['loss_torch']]}")
            worst = max(v["grad_rel_diff"] for v in res["params"].values() if "grad_rel_diff" in v)
            upd = max(v["max_abs_diff"] for v in res["params"].values())
            print(f"    max over parameters of max|grad diff|/max|grad| = {worst:.2e}; "
                  f"max|W_numpy - W_torch| after the step = {upd:.2e} (lr {args.lr})")
            ok &= worst < (FLOAT32_GRAD_TOL if dtype == "float32" else 1e-10)
        print(f"  -> {'OK' if ok else 'MISMATCH'}: the same computation is shown in float64 (< 1e-10). In float32 "
              f"a max-pool window whose two largest values tie within rounding can send the error to a different "
              f"winner in each library (in the default check: 2 of the first layer's 4e5 entries, moving its "
              f"weight gradient by 5e-4 of its maximum), hence the tolerance {FLOAT32_GRAD_TOL:g}; a wrong "
              f"layout or term would be off by O(1).")
        if not ok:
            sys.exit("the two engines do not compute the same thing: not timing them")

    print("\nalternating runs (images/s):")
    rows = alternate_runs(__file__, args, "images_per_s")
    print_libraries(rows)
    exact = all(x["exact_peak"] for x in rows)
    print("\nthroughput = images / median time of one training step (forward, gradients of every layer, Adam).")
    print("memory = peak RSS (VmHWM) of the worker during the timed steps minus its RSS just before the network was "
          "built" + (" (VmHWM reset after the warm-up steps)" if exact else " (lifetime peak: VmHWM not resettable)")
          + "; weights, gradients, optimiser state, every temporary of a step and what each allocator keeps. "
          "'other load' = CPU used by other processes meanwhile (timings are distorted when it is not ~0).")
    print(f"\n{'run':>3}  {'engine':<6} {'images/s':>9} {'s/step':>7} {'peak MiB':>9} {'steady MiB':>11} "
          f"{'faults':>8} {'other load':>11}")
    for x in rows:
        load = f"{100 * x['other_load']:>10.0f}%" if "other_load" in x else f"{'?':>11}"
        print(f"{x['rep']:>3}  {x['engine']:<6} {x['images_per_s']:>9.2f} {x['step_s']:>7.1f} {x['peak_mib']:>9.0f} "
              f"{x['steady_mib']:>11.0f} {x['minflt_per_step']:>8.0f} {load}")
    report_ratios(rows, "images_per_s", "conv_vs_autograd",
                  f"conv CLAPP step, VGG-6 x {args.width:g}, batch {args.batch}",
                  width=args.width, batch=args.batch, image=args.image, patch=args.patch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
