"""One training step of conv CLAPP-s / CLAPP vs the authors' own code (Illing et al. 2021), same weights and batch.

    python benchmarks/check_vs_authors.py --authors-code DIR [--rule clapp_s|clapp] [--layers N] [--batch 4]

``DIR`` is the ``vision`` folder of EPFL-LCN/pub-illing2021-neurips (the one that holds ``CLAPPVision``);
nothing of it is copied here, it is imported from there. Missing optional dependencies of their
modules (``IPython``, ``seaborn``) are replaced by empty stand-ins in ``sys.modules``.

Their side is their ``FullVisionModel`` (VGG-6, ``--encoder_type vgg_like --model_splits 6
--train_module 6 --contrast_mode hinge``, as their scripts train it; CLAPP adds their
``--asymmetric_W_pred --negative_samples 1 --sample_negs_locally
--sample_negs_locally_same_everywhere --either_pos_or_neg_update``), run as their ``main_vision.train``
runs one batch: a forward pass through every module (each module's input detached), then per
module ``zero_grad`` and ``loss[idx].backward()``. Their ``ContrastiveLoss`` scores ``c(y)^T W_k
z(y + k + skip_step)`` for ``k = 1 .. prediction_step`` with ``skip_step = 1``: row offsets 2 .. 6.

neuroplastic's side is :func:`neuroplastic.rules.conv_clapp.conv_clapp_layer` with ``score="patch"``
(their ``adaptive_avg_pool2d(·, 1)`` per patch) and ``offsets = 2 .. 6``, each layer fed the
previous layer's output. Weights and conv biases are copied from theirs (neuroplastic's layers with a
bias, as ``[model] bias = true`` gives them): ``b = bias``, ``W = weight.permute(0, 2, 3, 1)``,
``W_pred[k] = W_k[k].weight[:, :, 0, 0].T`` (their score ``c^T W_k z`` is neuroplastic's ``z^T W_pred c``),
and for CLAPP ``W_retro[k] = loss_mirror.W_k[k].weight[:, :, 0, 0]`` (their mirror pathway ``c^T W2 detach(z)``).

The random draws of their loss are fixed to neuroplastic's rolled pair sets (pair set ``s`` pairs
the context of image ``b`` with the patch of image ``(b - shift_s) mod B`` at the same grid
position) by replacing, during their forward pass only, ``torch.randint`` with a function that
returns those indices (it refuses any call it was not built for) and their module-level
``numpy.random.choice`` with a fixed per-image coin; their sampling and gathering code runs as is:

* CLAPP-s (their ``sample_negative_samples``, 16 negatives drawn over all rows, columns and images):
  negative ``j`` of every context ``(y, x, b)`` is the patch ``(y, x, (b - shift_j) mod B)``;
  16 shifts drawn from 1 .. B-1 (a fixed seed), the same for every layer and offset.
* CLAPP (``sample_negs_locally_same_everywhere``: one other image per image, same position): the
  negative of image ``b`` is image ``(b - s) mod B`` for one shift ``s != 0`` (their draw may pick
  ``b`` itself; this one never does), and their per-image coin (``either_pos_or_neg_update``:
  "pos" or "neg", drawn once per loss call) is a fixed balanced assignment. Their prediction and
  mirror losses draw coins and negatives independently; here both get the same ones, because
  neuroplastic's two pathways score the same pairs.

Reductions: their per-offset hinge loss is ``mean_b,y,x (pos) + mean_b,n,y,x (neg)``, averaged over
offsets; neuroplastic's weights are the same for CLAPP-s (positive ``1 / (K B R G_c)``, each
negative that over the number of negatives): constant 1. For CLAPP theirs is the mean over the
"pos" images plus the mean over the "neg" images, neuroplastic's the mean over all pairs (weight
``1 / (K B R G_c)`` each): positives count ``B / n_pos`` and negatives ``B / n_neg`` times more in
theirs, so the ratio is one constant only for a balanced coin (then exactly 2, used here). The
script measures the loss ratio, checks it is that constant, and compares ``their grad`` with
``constant x neuroplastic's grad``.

Printed per layer: both losses, their ratio, and per parameter ``max|a - c b| / max|a|`` (float32);
exit status 0 when every one is below ``--tol`` (default 1e-4; 1e-10 with ``--dtype float64``, where
their loss, kept in a float32 buffer, is held to 1e-6), 1 otherwise. In float32 a few 2 x 2 max-pool
windows hold two values equal to rounding, and the two convolutions may pick different winners; the
kernel and bias gradients of a pooled layer are therefore compared with neuroplastic's error routed through
their winners, and the number of such windows and the raw difference are printed. Where a kernel
gradient is a sum of nearly cancelling terms (VGG-6's third layer under CLAPP-s, at their initial
weights: every hinge active) float32 rounding alone reaches ~4e-3 of its largest entry; ``--dtype
float64`` then shows whether anything but rounding differs. The same holds for the bias gradient, a
sum over every location of the batch: in float32 it is held to 3e-3 (``BIAS_TOL_FLOAT32``), in float64
to ``--tol``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import types
from optparse import OptionParser
from pathlib import Path
from unittest import mock

import numpy as np

OFFSETS = (2, 3, 4, 5, 6)        # their k = 1 .. 5 with skip_step = 1
#: float32: each bias gradient sums ~10^4 - 10^5 nearly cancelling terms; against float64, theirs is off by up
#: to ~2e-3 of its largest entry (VGG-6 layers 1-3, batch 4), neuroplastic's by ~1e-4 (~2e-3 on layer 3).
BIAS_TOL_FLOAT32 = 3e-3
PATCH, STRIDE, IMAGE = 16, 8, 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-code", required=True, type=Path,
                   help="their 'vision' folder (contains CLAPPVision)")
    p.add_argument("--rule", choices=("clapp_s", "clapp"), default="clapp_s")
    p.add_argument("--layers", type=int, default=6, help="first N of VGG-6's six layers (default 6)")
    p.add_argument("--batch", type=int, default=4, help="images per batch (even, >= 2; default 4)")
    p.add_argument("--negatives", type=int, default=16, help="CLAPP-s negative sets (their default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--tol", type=float, default=None,
                   help="max relative difference accepted (default 1e-4 in float32, 1e-10 in float64)")
    args = p.parse_args(argv)
    if args.tol is None:
        args.tol = 1e-4 if args.dtype == "float32" else 1e-10
    if not 1 <= args.layers <= 6:
        p.error(f"--layers {args.layers}: VGG-6 has layers 1 .. 6")
    if args.batch < 2 or args.batch % 2:
        p.error(f"--batch {args.batch}: needs an even number >= 2 (a balanced CLAPP coin, a saccade to another image)")
    if not (args.authors_code / "CLAPPVision").is_dir():
        p.error(f"--authors-code {args.authors_code}: no CLAPPVision folder there (pass their 'vision' folder)")
    return args


# ---------------------------------------------------------------------------------------------
# their code

def import_authors(folder: Path):
    """Import their modules from ``folder``; stand-ins for the optional packages this environment lacks."""
    import importlib.util
    if importlib.util.find_spec("IPython") is None:          # ContrastiveLoss: ``from IPython import embed``
        sys.modules["IPython"] = types.SimpleNamespace(embed=lambda *a, **k: None)
    if importlib.util.find_spec("seaborn") is None:          # utils.utils (plots only)
        sys.modules["seaborn"] = types.ModuleType("seaborn")
    sys.path.insert(0, str(folder))
    from CLAPPVision.vision.arg_parser import general_args, reload_args, train_args
    from CLAPPVision.vision.models import ContrastiveLoss, FullModel
    return types.SimpleNamespace(general_args=general_args, train_args=train_args, reload_args=reload_args,
                                 ContrastiveLoss=ContrastiveLoss, FullModel=FullModel)


def authors_options(A, rule: str, negatives: int, batch: int):
    """Their ``opt`` from their own parser, with the command line of their training scripts."""
    import torch
    parser = OptionParser()
    for add in (A.general_args.parse_general_args, A.train_args.parse_train_args,
                A.reload_args.parser_reload_args):
        parser = add(parser)
    argv = ["--encoder_type", "vgg_like", "--model_splits", "6", "--train_module", "6",
            "--contrast_mode", "hinge", "--batch_size", str(batch)]
    if rule == "clapp":
        argv += ["--asymmetric_W_pred", "--negative_samples", "1", "--sample_negs_locally",
                 "--sample_negs_locally_same_everywhere", "--either_pos_or_neg_update"]
    else:
        argv += ["--negative_samples", str(negatives)]
    opt, _ = parser.parse_args(argv)
    opt.device = torch.device("cpu")
    if opt.prediction_step != len(OFFSETS):
        raise RuntimeError(f"their default prediction_step is {opt.prediction_step}, expected {len(OFFSETS)}")
    return opt


class FixedDraws:
    """Stand-ins for their random draws, returning the rolled pair sets (see the module docstring)."""

    def __init__(self, B: int, Gc: int, shifts, coin):
        self.B, self.Gc = B, Gc
        self.shifts = np.asarray(shifts)
        self.coin = np.asarray(coin)
        self.calls = {"global": 0, "local": 0, "coin": 0}

    def randint(self, high, size, dtype=None, device=None, **kw):
        import torch
        B, Gc, n = self.B, self.Gc, len(self.shifts)
        size = tuple(size)
        if size == (B,) and high == B:                        # sample_negative_samples_locally, same everywhere
            if n != 1:
                raise RuntimeError("a local negative needs exactly one shift")
            self.calls["local"] += 1
            return torch.as_tensor((np.arange(B) - self.shifts[0]) % B, dtype=dtype)
        if len(size) == 2 and size[1] == 1 and size[0] == high * n and high % (B * Gc) == 0:
            R = high // (B * Gc)                             # sample_negative_samples: rows y * x * b * n
            y, x, b, j = np.meshgrid(np.arange(R), np.arange(Gc), np.arange(B), np.arange(n), indexing="ij")
            idx = (y * Gc + x) * B + (b - self.shifts[j]) % B
            self.calls["global"] += 1
            return torch.as_tensor(idx.reshape(-1, 1), dtype=dtype)
        raise RuntimeError(f"unexpected torch.randint({high}, {size}) in their forward pass")

    def choice(self, a, size=None, replace=True, p=None):
        if size != self.B or list(a) != ["pos", "neg", "both"]:
            raise RuntimeError(f"unexpected numpy.random.choice({a!r}, size={size})")
        self.calls["coin"] += 1
        return self.coin.copy()


def authors_step(A, model, x, n_layers: int, draws: FixedDraws):
    """Their forward pass and per-module backward; layer inputs, losses and gradients (numpy)."""
    import torch
    inputs = {}
    hooks = [model.encoder[l].model[0].register_forward_pre_hook(         # the conv: sees the unfolded patches
        lambda mod, args, l=l: inputs.__setitem__(l, args[0].detach().clone())) for l in range(n_layers)]
    hooks += [model.encoder[l].model[1].register_forward_hook(            # the ReLU: the map before the pool
        lambda mod, args, out, l=l: inputs.__setitem__(("relu", l), out.detach().clone())) for l in range(n_layers)]
    t0 = time.perf_counter()
    with mock.patch.object(torch, "randint", draws.randint), \
            mock.patch.object(A.ContrastiveLoss, "choice", draws.choice):
        loss, _, _, _, _ = model(x, None, n=n_layers)
    loss = loss[0]
    grads = []
    for l in range(n_layers):                                # as main_vision.train: per module, retain_graph
        model.zero_grad()
        loss[l].backward(retain_graph=l < n_layers - 1)
        grads.append({name: p.grad.detach().clone() for name, p in model.encoder[l].named_parameters()
                      if p.grad is not None})
    seconds = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    return [float(v.detach()) for v in loss[:n_layers]], grads, inputs, seconds


# ---------------------------------------------------------------------------------------------
# neuroplastic

def pair_sets(rule, B, Gr, Gc, shifts, coin):
    """Rolled pair sets with neuroplastic's weights (``ConvClappStack.pair_sets``' convention) for these draws."""
    K = len(OFFSETS)
    valid = np.zeros((K, B, Gr, Gc))
    for kappa, k in enumerate(OFFSETS):
        valid[kappa, :, :Gr - k, :] = 1.0 / (K * B * (Gr - k) * Gc)
    if rule == "clapp_s":
        per_set = np.array([1.0] + [1.0 / len(shifts)] * len(shifts))
        weights = valid[:, None] * per_set[None, :, None, None, None]
        return [0] + [int(s) for s in shifts], weights
    pos = (np.asarray(coin) == "pos").astype(float)[None, :, None, None]
    weights = np.stack([valid * pos, valid * (1 - pos)], axis=1)
    return [0, int(shifts[0])], weights


def rerouted_W_grad(x, g, z0_theirs, params, shifts, weights):
    """neuroplastic's kernel and bias gradients with the max-pool error routed to *their* winners; the number of
    windows whose winner differs. In float32 a few 2 x 2 windows hold two values equal to rounding, and the two
    convolutions (im2col + BLAS vs torch's) may round them to different winners: the error of that
    window then reaches a neighbouring location. Routing through their winners removes that one
    difference, so what remains is the rule."""
    from neuroplastic.rules.conv import conv2d_weight_grad, maxpool2, maxpool2_backward
    from neuroplastic.rules.conv_clapp import grid_scores
    B, Gr, Gc, h, w, C = g.z.shape
    q = np.mean(g.z, axis=(3, 4)).reshape(B, Gr, Gc, 1, C)
    sg = grid_scores(q, params["W_pred"], OFFSETS, shifts, weights, W_retro=params.get("W_retro"))
    delta = np.broadcast_to(sg.delta.reshape(-1, 1, 1, C) / (h * w), (B * Gr * Gc, h, w, C))
    z0 = np.ascontiguousarray(z0_theirs.transpose(0, 2, 3, 1))
    pooled = maxpool2(z0)
    delta_a = maxpool2_backward(z0, pooled, delta, relu=True)
    x4 = x.reshape(-1, *x.shape[3:])
    ones = np.ones_like(pooled)
    ours = maxpool2_backward(np.maximum(conv2d_np(x4, params["W"]) + params["b"], 0), g.z.reshape(pooled.shape),
                             ones) != 0
    theirs = maxpool2_backward(z0, pooled, ones) != 0
    flips = int(np.sum((ours != theirs) & (np.repeat(np.repeat(pooled, 2, 1), 2, 2) > 0))) // 2
    gb = np.ones(delta_a.size // C, dtype=delta_a.dtype) @ delta_a.reshape(-1, C)   # summed as the rule sums it
    return conv2d_weight_grad(x4, delta_a, 3, 1, 1), gb, flips


def conv2d_np(x, W):
    from neuroplastic.rules.conv import conv2d
    return conv2d(x, W, 1, 1)


def neuroplastic_step(params, grid, n_layers, shifts, weights, pools):
    from neuroplastic.rules.conv_clapp import conv_clapp_layer
    x, out = grid, []
    t0 = time.perf_counter()
    for l in range(n_layers):
        g = conv_clapp_layer(params[l]["W"], params[l]["W_pred"], x, OFFSETS, shifts, weights,
                             W_retro=params[l].get("W_retro"), b=params[l]["b"], pool=pools[l], score="patch")
        out.append((x, g))
        x = g.z
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------

def rel_diff(a, b) -> float:
    """``max|a - b| / max|a|`` (0 when both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(a))
    diff = np.max(np.abs(a - b))
    return float(diff / scale) if scale > 0 else float(diff)


def main(argv=None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits
    import torch
    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    from neuroplastic.rules.architectures import VGG6, parse_architecture
    from neuroplastic.stimuli.glimpses import patch_grid

    A = import_authors(args.authors_code.resolve())
    B, n_layers = args.batch, args.layers
    opt = authors_options(A, args.rule, args.negatives, B)
    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(io.StringIO()):          # their constructor prints the whole model
        model = A.FullModel.FullVisionModel(opt, calc_loss=True)
    model.switch_calc_loss(True)
    dtype = np.dtype(args.dtype)
    if dtype == np.float64:
        model.double()

    # the batch: grey images, normalised as their loader does (zero mean, unit variance), cut by both sides
    rng = np.random.default_rng(args.seed)
    images = rng.standard_normal((B, IMAGE, IMAGE)).astype(dtype)
    grid = np.ascontiguousarray(patch_grid(images, PATCH, STRIDE))          # (B, 7, 7, 16, 16, 1)
    Gr, Gc = grid.shape[1:3]
    if args.rule == "clapp_s":
        shifts = rng.integers(1, B, size=args.negatives)
        coin = ["both"] * B
    else:
        shifts = rng.integers(1, B, size=1)
        coin = np.array(["pos"] * (B // 2) + ["neg"] * (B // 2))[rng.permutation(B)]
    draws = FixedDraws(B, Gc, shifts, coin)

    # their weights in neuroplastic's layout
    specs = parse_architecture(VGG6)
    params = []
    for l in range(n_layers):
        enc = model.encoder[l]
        p = {"W": enc.model[0].weight.detach().permute(0, 2, 3, 1).numpy().copy(),
             "b": enc.model[0].bias.detach().numpy().copy(),
             "W_pred": np.stack([w.weight.detach()[:, :, 0, 0].T.numpy() for w in enc.loss.W_k])}
        if args.rule == "clapp":
            p["W_retro"] = np.stack([w.weight.detach()[:, :, 0, 0].numpy() for w in enc.loss_mirror.W_k])
        params.append({k: np.ascontiguousarray(v, dtype=dtype) for k, v in p.items()})

    loss_a, grads_a, inputs_a, t_a = authors_step(A, model, torch.from_numpy(images[:, None]), n_layers, draws)
    shifts_np, weights = pair_sets(args.rule, B, Gr, Gc, shifts, coin)
    weights = weights.astype(dtype)
    pools = [s.pool for s in specs]
    out_np, t_np = neuroplastic_step(params, grid, n_layers, shifts_np, weights, pools)

    K = len(OFFSETS)
    expected = {"global": n_layers * K if args.rule == "clapp_s" else 0,
                "local": 2 * n_layers * K if args.rule == "clapp" else 0,
                "coin": 2 * n_layers if args.rule == "clapp" else 0}
    print(f"rule {args.rule}, VGG-6 layers 1..{n_layers}, batch {B} grey {IMAGE}x{IMAGE} -> {Gr}x{Gc} patches "
          f"{PATCH}x{PATCH} stride {STRIDE}, offsets {list(OFFSETS)}, score 'patch', {args.dtype}, seed {args.seed}")
    if args.rule == "clapp_s":
        print(f"negative shifts (image b paired with b - s mod {B}): {[int(s) for s in shifts]}")
    else:
        print(f"saccade shift {int(shifts[0])}, coin per image {[str(c) for c in coin]} (prediction and mirror pathways alike)")
    print(f"their draws replaced: {draws.calls} (expected {expected})")
    ok = draws.calls == expected
    worst = 0.0
    header = f"{'layer':>5}  {'parameter':<10} {'max rel diff':>12}   detail"
    print(header)
    for l in range(n_layers):
        x_np, g = out_np[l]
        enc = model.encoder[l]
        # the layer's input: their (B * G_r * G_c, C, h, w) map vs neuroplastic's (B, G_r, G_c, h, w, C)
        x_a = inputs_a[l].numpy()
        x_a = x_a.reshape(B, Gr, Gc, *x_a.shape[1:]).transpose(0, 1, 2, 4, 5, 3)
        d_in = rel_diff(x_a, x_np)
        ratio = loss_a[l] / float(g.loss)
        const = 1.0 if args.rule == "clapp_s" else 2.0
        d_loss = abs(ratio - const) / const
        ga = grads_a[l]
        rows = [("input", d_in, f"shape {tuple(x_np.shape)}"),
                ("loss", d_loss, f"theirs {loss_a[l]:.7g}, ours {float(g.loss):.7g}, ratio {ratio:.7g} "
                                 f"(expected constant {const:g})"),
                ("W", rel_diff(ga["model.0.weight"].permute(0, 2, 3, 1).numpy(), const * g.W),
                 f"max|grad| {np.max(np.abs(g.W)):.3g}"),
                ("b", rel_diff(ga["model.0.bias"].numpy(), const * g.b), f"max|grad| {np.max(np.abs(g.b)):.3g}")]
        if pools[l]:
            gW, gb, flips = rerouted_W_grad(x_np, g, inputs_a[("relu", l)].numpy(), params[l], shifts_np, weights)
            d_raw, d_raw_b = rows[-2][1], rows[-1][1]
            rows[-2] = ("W", rel_diff(ga["model.0.weight"].permute(0, 2, 3, 1).numpy(), const * gW),
                        rows[-2][2] + f"; {flips} max-pool window(s) with another winner (float32 near-ties), "
                        f"relative difference before routing through their winners {d_raw:.3e}")
            rows[-1] = ("b", rel_diff(ga["model.0.bias"].numpy(), const * gb),
                        rows[-1][2] + f"; before routing through their winners {d_raw_b:.3e}")
        W_pred_a = np.stack([ga[f"loss.W_k.{i}.weight"][:, :, 0, 0].T.numpy() for i in range(K)])
        rows.append(("W_pred", rel_diff(W_pred_a, const * g.W_pred), f"max|grad| {np.max(np.abs(g.W_pred)):.3g}"))
        if args.rule == "clapp":
            W_retro_a = np.stack([ga[f"loss_mirror.W_k.{i}.weight"][:, :, 0, 0].numpy() for i in range(K)])
            rows.append(("W_retro", rel_diff(W_retro_a, const * g.W_retro),
                         f"max|grad| {np.max(np.abs(g.W_retro)):.3g}"))
        n_on = n_all = 0
        for kappa, gm in enumerate(g.gamma):                 # pairs with weight > 0 whose hinge is active
            used = weights[kappa][:, :, :gm.shape[2]] > 0
            n_all += int(used.sum())
            n_on += int((used & (gm[..., 0] != 0)).sum())
        active = n_on / n_all
        for name, d, detail in rows:
            # their per-module losses are stored in a float32 buffer (FullVisionModel.evaluate_losses)
            tol = max(args.tol, 1e-6) if name == "loss" else args.tol
            if name == "b" and dtype == np.float32:
                tol = max(tol, BIAS_TOL_FLOAT32)
            ok = ok and d <= tol
            worst = max(worst, d)
            flag = "" if d <= tol else "  <-- above tolerance"
            print(f"{l + 1:>5}  {name:<10} {d:12.3e}   {detail}{flag}")
        print(f"{'':>5}  {'':<10} {'':>12}   hinge active in {active:.1%} of pairs")
    print(f"time of one step (layers 1..{n_layers}, {args.threads} thread(s)): theirs {t_a:.2f} s "
          f"(forward + backward per module), neuroplastic {t_np:.2f} s")
    print(f"worst relative difference {worst:.3e}, tolerance {args.tol:g}: {'AGREE' if ok else 'DIFFER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
