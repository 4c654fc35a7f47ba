"""Training step of the VGG-6 CLAPP-s (or CLAPP) encoder: the authors' own code vs neuroplastic on numpy and on torch.

    python benchmarks/bench_vs_authors.py --authors-code DIR [--rule clapp_s|clapp] [--threads 2] [--batch 32]
                                          [--repeats 3] [--steps 2] [--layers 6] [--device cpu|cuda]

``DIR`` is the ``vision`` folder of EPFL-LCN/pub-illing2021-neurips; their code is imported from there
(as :mod:`check_vs_authors` does it, which shows that both sides compute the same step), never copied.
The paper's vision setting: batches of ``--batch`` (32) grey 64 x 64 images, each a 7 x 7 grid of
16 x 16 patches (stride 8), encoded by VGG-6 ([128, 256, M, 256, 512, M, 1024, M, 1024, M]), every
conv layer its own learner, scoring the spatial mean of each patch's map, predicting the patches
2 .. 6 rows below (one prediction matrix each) against 16 negatives (CLAPP: one, and a coin per
image), one Adam step (lr 2e-4) of every layer per batch, float32, random normal images. One step
is, from a batch of images to updated weights:

  authors  their ``FullVisionModel`` (``--encoder_type vgg_like --model_splits 6 --train_module 6
           --contrast_mode hinge``, CLAPP with their ``--asymmetric_W_pred`` options) and one
           ``torch.optim.Adam`` per module, as their ``load_model_and_optimizer`` makes them; their
           ``main_vision.train`` loop body: the forward pass of every module (which cuts the patches
           and draws the negatives), then per module ``zero_grad``, ``backward``, ``optimizer.step``.
           Their module losses are written into one tensor (``loss[:, idx] = ...``), so each module's
           ``backward`` runs through every module's graph (the others with zero gradients): their
           step does the backward work of all layers once per layer. Under their torch 1.0 Adam
           updated ``p.data``; today's updates bump the version counter that the next ``backward``
           checks, so the steps are made after the last ``backward`` (the same updates: a module's
           gradient comes from its own loss only). ``--authors-backward once`` instead calls
           ``backward`` once on the sum of the losses: the same gradients, each graph run once;
  numpy    neuroplastic's ``ConvClappStack`` (``sampling="authors"``, ``score="patch"``, ``init="torch"``,
           ``bias=True``, as the paper protocols): the patch
           grid cut (``patch_grid``), ``pair_sets`` drawn, ``train_batch`` (explicit gradients,
           im2col convolutions) with the package's ``Adam``, as the rate engine's ``ConvClapp.step``;
  torch    the same code on torch tensors: the weights moved once (``torch.as_tensor``), each batch
           moved as it is cut, the pair sets drawn in numpy as always (the rules move them).

The weights are each side's own initialisation (the work of a step does not depend on them). Every
measurement runs in its own fresh process (``_workers.py``): ``--warmup`` untimed steps, then
``--steps`` timed ones; the modes alternate ``--repeats`` times; numpy's BLAS and torch get the same
``--threads``. Printed: per run and per mode the median seconds per step, the peak host memory (peak
RSS of the worker during the timed steps over its RSS before the network was built), the ratios
authors/numpy and authors/torch of time and of peak memory (> 1: neuroplastic is faster / smaller;
the median over the repeats of runs made one after the other), the machine's load average at the start
and end and the CPU other processes used meanwhile, and the libraries.

Also printed: the achieved FLOP/s of each step against the float32 GEMM peak of the same library and
threads (the best of 10 square ``--gemm`` x ``--gemm`` products, timed in the same worker after the
steps). The step's FLOPs are counted from the layer shapes, the same nominal count (the work the
step needs; the authors' loop does more, above) for every mode (multiply-add = 2 FLOPs); with ``N_p = B G_r G_c`` patches, a layer of ``C_in -> C`` channels on
``h x h`` maps and ``n_c = B (G_r - k) G_c`` contexts of offset ``k``:

* the convolution, ``2 M C K`` with ``M = N_p h^2``, ``K = 9 C_in``, and its kernel gradient, the
  same again; no input gradient (every layer's input is data: neither side computes one);
* per offset and pathway (CLAPP-s: the prediction; CLAPP: prediction and retrodiction) three C x C
  products per context, ``3 * 2 n_c C^2`` (the prediction ``W_pred c``, its weight gradient, the
  error sent back to the context), and ``2 n_c C`` per pair for the score and per pair for the error
  it sends to the prediction (and, in the prediction pathway, to the predicted patch):
  ``(1 + n)`` pairs per context, n = 16 negatives (CLAPP: 1).

Not counted: ReLU, max-pool, the patch means, im2col copies, the sampling, Adam (all linear in the
number of values, not in a product of dimensions).

``--device cuda`` runs the authors' model (``.cuda()``) and neuroplastic on torch CUDA tensors (numpy
has no GPU mode), synchronising after each step, and reports the device memory: the peak of
``torch.cuda.max_memory_allocated`` during the warm-up and timed steps over what was allocated before
the network was built. There the GEMM peak is torch's float32 ``matmul`` (no TF32), while torch lets
cuDNN convolutions use TF32 by default (both sides' convolutions are cuDNN's there: the rules call
torch's own kernels on torch tensors). ``--layers`` (first N layers) and ``--batch`` make a reduced
run (their network cannot be narrowed).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import statistics
import sys
from pathlib import Path

from _workers import alternate_runs, print_libraries, time_steps, worker_options

OFFSETS = (2, 3, 4, 5, 6)          # their k = 1 .. 5 with skip_step = 1
IMAGE, PATCH, STRIDE = 64, 16, 8
MODES = ("authors", "numpy", "torch")


# ---------------------------------------------------------------------------------------------
# the network's shapes and the step's FLOPs

def architecture(layers: int) -> list:
    """VGG-6's first ``layers`` conv layers, each with the max-pool that follows it."""
    from neuroplastic.rules.architectures import VGG6
    out, n = [], 0
    for c in VGG6:
        if c != "M":
            if n == layers:
                break
            n += 1
        out.append(c)
    return out


def step_flops(layers: int, batch: int, rule: str, negatives: int) -> dict:
    """Nominal FLOPs of one training step (see the module docstring): ``conv`` and ``scores``."""
    from neuroplastic.rules.architectures import parse_architecture
    G = (IMAGE - PATCH) // STRIDE + 1
    n_p, h, c_in = batch * G * G, PATCH, 1
    n = negatives if rule == "clapp_s" else 1
    pathways = 1 if rule == "clapp_s" else 2
    conv = scores = 0
    for spec in parse_architecture(architecture(layers)):
        C = spec.channels
        conv += 2 * (2 * n_p * h * h * C * 9 * c_in)                     # forward + kernel gradient
        for k in OFFSETS:
            n_c = batch * (G - k) * G
            scores += pathways * 3 * 2 * n_c * C * C                     # W c, its gradient, error to c
            scores += (2 * pathways + 1) * 2 * n_c * C * (1 + n)         # score and errors, per pair
        h = h // 2 if spec.pool else h
        c_in = C
    return {"conv": conv, "scores": scores, "total": conv + scores}


# ---------------------------------------------------------------------------------------------
# the three steps (imported lazily in the worker that runs them)

def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


@functools.cache
def authors_modules(folder: Path):
    """Their modules, imported once per process (the stand-ins of their optional imports are set up once)."""
    from check_vs_authors import import_authors
    return import_authors(folder)


class AuthorsStep:
    """Their model and optimisers, their training loop's body (``main_vision.train``) for one batch."""

    def __init__(self, args, layers: int):
        import torch
        from check_vs_authors import authors_options
        A = authors_modules(args.authors_code.resolve())
        opt = authors_options(A, args.rule, args.negatives, args.batch)
        opt.device = torch.device(args.device)
        opt.learning_rate = args.lr
        torch.manual_seed(args.seed)
        with contextlib.redirect_stdout(io.StringIO()):          # their constructor prints the whole model
            model = A.FullModel.FullVisionModel(opt, calc_loss=True)
        model.switch_calc_loss(True)
        self.model = model.to(opt.device)
        # load_vision_model.load_model_and_optimizer: one Adam per module (model_splits >= 2)
        self.optimizers = [torch.optim.Adam(layer.parameters(), lr=opt.learning_rate, weight_decay=opt.weight_decay)
                           for layer in self.model.encoder]
        self.torch, self.device, self.layers, self.once = torch, opt.device, layers, args.authors_backward == "once"

    def step(self, images):
        x = self.torch.from_numpy(images[:, None]).to(self.device)           # (B, 1, 64, 64), as their loader
        loss, _, _, _, _ = self.model(x, None, n=self.layers)
        loss = self.torch.mean(loss, 0)
        if self.once:                                                        # --authors-backward once
            self.model.zero_grad()
            loss[:self.layers].sum().backward()
            grads = [[p.grad for p in layer.parameters()] for layer in self.model.encoder[:self.layers]]
        else:
            grads = []
            for idx in range(self.layers):
                self.model.zero_grad()
                loss[idx].backward(retain_graph=idx < self.layers - 1)
                grads.append([p.grad for p in self.model.encoder[idx].parameters()])
        # their optimizer[idx].step() right after each backward, deferred (see the module docstring): same updates
        for idx in range(self.layers):
            for p, g in zip(self.model.encoder[idx].parameters(), grads[idx]):
                p.grad = g
            self.optimizers[idx].step()
        out = [v.item() for v in loss[:self.layers]]
        _sync(self.device.type)
        return out


class PackageStep:
    """neuroplastic's ``ConvClappStack`` with the authors' sampling on numpy or torch arrays, its ``Adam``."""

    def __init__(self, args, layers: int):
        import numpy as np

        from neuroplastic.engines.numpy.conv_stack import ConvClappStack
        from neuroplastic.engines.numpy.memory import retain_freed_memory
        from neuroplastic.engines.numpy.optim import Adam
        from neuroplastic.stimuli.glimpses import patch_grid
        retain_freed_memory()          # as the numpy engine's train() does
        self.net = ConvClappStack.init(architecture(layers), 1, args.rule, np.random.default_rng(args.seed + 2),
                                       offsets=OFFSETS, dtype="float32", score="patch", sampling="authors",
                                       init="torch", bias=True)           # as their layers: PyTorch's init, a bias
        self.device = args.device
        if args.worker == "torch":
            import torch
            self.move = lambda a: torch.as_tensor(a, device=args.device)
            self.net.params.update({k: self.move(v) for k, v in self.net.params.items()})
        else:
            self.move = lambda a: a
        self.rng = np.random.default_rng(args.seed + 1)
        self.opt, self.cut, self.args = Adam(args.lr), patch_grid, args

    def step(self, images):
        grid = self.cut(images, PATCH, STRIDE)                              # (B, G_r, G_c, 16, 16, 1)
        x = self.move(grid)
        B, Gr, Gc = grid.shape[:3]
        pairs = self.net.pair_sets(B, Gr, Gc, self.rng, self.args.negatives, 0.5)
        out = self.net.train_batch(x, self.opt, *pairs).loss
        _sync(self.device)
        return out


def gemm_peak(mode: str, n: int, device: str, repeats: int = 10) -> float:
    """Float32 FLOP/s of the best of ``repeats`` ``n x n`` matrix products of this mode's library."""
    import time

    import numpy as np
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    if mode != "numpy":
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        a, b = torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)
    best = float("inf")
    for _ in range(repeats + 1):                     # the first product warms up
        _sync(device)
        t0 = time.perf_counter()
        c = a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    del c
    return 2.0 * n ** 3 / best


# ---------------------------------------------------------------------------------------------
# worker

def worker_time(args) -> dict:
    import numpy as np
    Step = AuthorsStep if args.worker == "authors" else PackageStep
    if args.worker != "numpy":
        import torch
        torch.set_num_threads(args.threads)
    cuda = {}

    def build():
        if args.device == "cuda":
            import torch
            torch.cuda.synchronize()
            cuda["before"] = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return Step(args, args.layers)

    rng = np.random.default_rng(args.seed)
    images = [rng.standard_normal((args.batch, IMAGE, IMAGE), dtype=np.float32)
              for _ in range(min(args.warmup + args.steps, 4))]
    out = time_steps(args, build=build, inputs=lambda k: (images[k % len(images)],),
                     build_tiny=lambda: Step(args, 1), tiny_inputs=lambda k: (images[0][:4],))
    if args.worker != "numpy":
        import torch
        out |= {"torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}
    if args.device == "cuda":
        out["device_peak_mib"] = (torch.cuda.max_memory_allocated() - cuda["before"]) / 2 ** 20
        out["device_name"] = torch.cuda.get_device_name()
    flops = step_flops(args.layers, args.batch, args.rule, args.negatives)["total"]
    out["gemm_flops"] = gemm_peak(args.worker, args.gemm, args.device)
    out["step_flops"] = flops / out["step_s"]
    return out | {"images_per_s": args.batch / out["step_s"]}


# ---------------------------------------------------------------------------------------------
# parent

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-code", required=True, type=Path, help="their 'vision' folder (contains CLAPPVision)")
    p.add_argument("--rule", choices=("clapp_s", "clapp"), default="clapp_s")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--authors-backward", choices=("theirs", "once"), default="theirs",
                   help="theirs: their loop, a backward per module through the shared loss tensor; once: one "
                        "backward of the summed losses (the same gradients)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=None,
                   help="what to time, in this order (default: authors numpy torch; on cuda: authors torch)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS and torch threads, for every mode")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32, the paper's)")
    p.add_argument("--layers", type=int, default=6, help="first N of VGG-6's six layers (default 6)")
    p.add_argument("--negatives", type=int, default=16, help="CLAPP-s negatives per context (their default 16)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam's learning rate (their default 2e-4)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    p.add_argument("--steps", type=int, default=2, help="timed steps per run (their median is the run's time)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per mode")
    p.add_argument("--gemm", type=int, default=None, help="side of the GEMM-peak product (default 2048; 8192 on cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.layers <= 6:
        p.error(f"--layers {args.layers}: VGG-6 has layers 1 .. 6")
    if args.batch < 2:
        p.error(f"--batch {args.batch}: needs >= 2 (a negative comes from another image)")
    if args.rule == "clapp":
        args.negatives = 1
    if not (args.authors_code / "CLAPPVision").is_dir():
        p.error(f"--authors-code {args.authors_code}: no CLAPPVision folder there (pass their 'vision' folder)")
    if args.modes is None:
        args.modes = ["authors", "torch"] if args.device == "cuda" else list(MODES)
    if args.device == "cuda" and "numpy" in args.modes:
        p.error("--device cuda --modes numpy: numpy arrays live in host memory; on cuda time 'authors' and 'torch'")
    if args.gemm is None:
        args.gemm = 8192 if args.device == "cuda" else 2048
    args.passthrough = worker_options(sys.argv[1:] if argv is None else argv, args.threads)
    return args


def require_gpu() -> str:
    """The GPU's name, or exit with a message saying why ``--device cuda`` cannot run here."""
    try:
        import torch
    except ImportError:
        sys.exit("--device cuda needs torch (a CUDA build from pytorch.org)")
    if not torch.cuda.is_available():
        sys.exit(f"--device cuda: no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False); "
                 "run it on a machine with a GPU and a CUDA build of torch, or use --device cpu")
    return torch.cuda.get_device_name()


def ratios(rows, num: str, den: str, key: str) -> list[float]:
    """``num``'s ``key`` over ``den``'s, per repeat (runs made one after the other)."""
    by = {(x["rep"], x["engine"]): x[key] for x in rows}
    return [by[r, num] / by[r, den] for r in sorted({x["rep"] for x in rows})
            if (r, num) in by and (r, den) in by and by[r, den] > 0]


def versions() -> str:
    import platform

    import numpy
    import scipy
    import array_api_compat
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return (f"python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
            f"array_api_compat {array_api_compat.__version__}; CPU {cpu}, os.cpu_count() = {os.cpu_count()}")


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker_time(args)))
        return 0
    gpu = require_gpu() if args.device == "cuda" else None
    load0 = os.getloadavg()
    G = (IMAGE - PATCH) // STRIDE + 1
    flops = step_flops(args.layers, args.batch, args.rule, args.negatives)
    name = {"clapp_s": "CLAPP-s", "clapp": "CLAPP"}[args.rule]
    print(f"{name} VGG-6 encoder, one training step: the authors' code vs neuroplastic (numpy / torch), "
          f"{args.device}{' (' + gpu + ')' if gpu else ''}, float32")
    print(f"encoder {architecture(args.layers)}{' (the paper)' if args.layers == 6 else ''}, batch {args.batch} grey "
          f"{IMAGE}x{IMAGE} images = {G}x{G} grid of {PATCH}x{PATCH} patches (stride {STRIDE}); score per patch, row "
          f"offsets {list(OFFSETS)}, {args.negatives} negative(s), their sampling; Adam lr {args.lr:g}")
    print(f"threads: {args.threads} for every mode; {args.warmup} warm-up + {args.steps} timed steps per run, "
          f"{args.repeats} alternating run(s) of {', '.join(args.modes)}")
    print(f"nominal FLOPs per step: {flops['total'] / 1e9:.1f} G (convolutions and kernel gradients "
          f"{flops['conv'] / 1e9:.1f} G, scores {flops['scores'] / 1e9:.1f} G)")
    print(f"load average at start (1, 5, 15 min): {', '.join('%.2f' % v for v in load0)}")

    print("\nalternating runs (images/s):")
    rows = alternate_runs(__file__, args, "images_per_s", modes=args.modes)
    load1 = os.getloadavg()

    mem = "device_peak_mib" if args.device == "cuda" else "peak_mib"
    print("\ns/step = median time of one training step (batch to updated weights: forward of every layer, every "
          "layer's update, Adam).")
    print("peak MiB = peak RSS (VmHWM) of the worker during the timed steps minus its RSS just before the network was "
          "built" + (" (VmHWM reset after the warm-up)" if all(x["exact_peak"] for x in rows) else
                     " (lifetime peak: VmHWM not resettable)") + "; 'other load' = CPU used by other processes "
          "meanwhile (timings are distorted when it is not ~0).")
    if args.device == "cuda":
        print("dev MiB = torch.cuda.max_memory_allocated during the warm-up and timed steps minus what was allocated "
              "before the network was built.")
    print(f"GFLOP/s = nominal FLOPs / s/step; GEMM = best float32 {args.gemm}x{args.gemm} matrix product of the same "
          f"library and threads in the same worker; % = GFLOP/s / GEMM (over 100: that library's convolution kernels "
          f"beat its matrix product).")
    dev_col = f" {'dev MiB':>8}" if args.device == "cuda" else ""
    print(f"\n{'run':>3}  {'mode':<7} {'s/step':>7} {'images/s':>9} {'peak MiB':>9} {'steady MiB':>11}{dev_col} "
          f"{'GFLOP/s':>8} {'GEMM':>7} {'%':>4} {'other load':>11}")
    for x in rows:
        load = f"{100 * x['other_load']:>10.0f}%" if "other_load" in x else f"{'?':>11}"
        dev = f" {x['device_peak_mib']:>8.0f}" if args.device == "cuda" else ""
        print(f"{x['rep']:>3}  {x['engine']:<7} {x['step_s']:>7.2f} {x['images_per_s']:>9.2f} {x['peak_mib']:>9.0f} "
              f"{x['steady_mib']:>11.0f}{dev} {x['step_flops'] / 1e9:>8.1f} {x['gemm_flops'] / 1e9:>7.1f} "
              f"{100 * x['step_flops'] / x['gemm_flops']:>4.0f} {load}")

    print(f"\nmedian over the runs{' (memory: device)' if args.device == 'cuda' else ''}:")
    print(f"  {'mode':<7} {'s/step':>7} {'peak MiB':>9} {'GFLOP/s':>8} {'GEMM':>7} {'%':>4}")
    for mode in args.modes:
        m = [x for x in rows if x["engine"] == mode]
        med = {k: statistics.median(x[k] for x in m) for k in ("step_s", mem, "step_flops", "gemm_flops")}
        print(f"  {mode:<7} {med['step_s']:>7.2f} {med[mem]:>9.0f} {med['step_flops'] / 1e9:>8.1f} "
              f"{med['gemm_flops'] / 1e9:>7.1f} {100 * med['step_flops'] / med['gemm_flops']:>4.0f}")

    recorded = {}
    print()
    for other in ("numpy", "torch"):
        if "authors" not in args.modes or other not in args.modes:
            continue
        for what, key, better in (("time", "step_s", "faster"), ("peak memory", mem, "smaller")):
            r = ratios(rows, "authors", other, key)
            if r:
                print(f"{what} ratio authors/{other}: median {statistics.median(r):.2f} (per repeat: "
                      f"{', '.join('%.2f' % v for v in r)}; > 1: neuroplastic on {other} is {better})")
                recorded[f"{what} authors/{other}"] = {
                    "value": statistics.median(r), "target": "",
                    "what": f"{name} VGG-6 step, batch {args.batch}, {args.device}, {args.threads} thread(s)"}
    print(f"\nload average at end (1, 5, 15 min): {', '.join('%.2f' % v for v in load1)}")

    numpy_row = next((x for x in rows if x["engine"] == "numpy"), None)
    torch_row = next((x for x in rows if "torch_version" in x), None)
    print(f"\n{versions()}")
    if numpy_row and torch_row:
        print_libraries([numpy_row, torch_row | {"engine": "torch"}])
    elif torch_row:
        print(f"torch {torch_row['torch_version']}, torch.get_num_threads() = {torch_row['torch_threads']}")
    if recorded:
        from neuroplastic.bench import record
        record("vs_authors", recorded, rule=args.rule, batch=args.batch, layers=args.layers, device=args.device,
               threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
