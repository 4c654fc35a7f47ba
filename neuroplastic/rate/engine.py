"""Train a protocol with the numpy engine: data -> glimpses -> CLAPP stack -> probes -> run directory.

Randomness comes from three generators seeded by ``(seed, k)``: the weights
(k = 0), the training stream (batches, saccades, negatives; k = 1) and the
probe split (k = 2). The training generator's state is checkpointed with the
weights and the optimiser, so a resumed run is bit-identical to an
uninterrupted one.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from tqdm.auto import tqdm

from ..engines import TrainingDiverged, prepare, seed_sequence
from ..evaluate import chosen_layers, probe_layers
from .memory import retain_freed_memory
from .network import ClappStack
from .optim import make_optimizer

__all__ = ["train"]

log = logging.getLogger(__name__)


def train(protocol, run, progress: bool = True, prepared=None) -> dict:
    """Train, checkpoint, probe and write everything into ``run``; return the summary.

    ``prepared`` is :func:`neuroplastic.engines.prepare`'s result (computed here if not given).
    """
    ds, grid, train_idx, test_idx = prepared if prepared is not None else prepare(protocol)
    retain_freed_memory()                  # reuse each step's temporaries instead of page-faulting them in
    dtype = protocol.engine.dtype
    patches = grid.patches.astype(dtype)
    sizes = [patches.shape[-1], *protocol.model.layers]
    init = dict(dtype=dtype, init_scale=protocol.model.init_scale,
                pred_init_scale=protocol.model.pred_init_scale)
    net = ClappStack.init(sizes, protocol.rule.name, np.random.default_rng(seed_sequence(protocol, 0)), **init)
    initial = {k: v.copy() for k, v in net.params.items()}
    opt = make_optimizer(protocol.rule.optimizer, protocol.rule.lr)
    rng = np.random.default_rng(seed_sequence(protocol, 1))
    rows: list[dict] = []
    tr = protocol.train

    start = 0
    ckpt = run.latest_checkpoint()
    if ckpt is not None:
        start, arrays, state = ckpt
        net.params.update({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
        opt.load_state_dict({**{k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")},
                             "t": state["opt_t"]})
        rng.bit_generator.state = state["rng"]
        rows = state["metrics"]
        log.info("resuming %s from epoch %d", run.directory, start)
    else:
        _checkpoint(run, 0, net, opt, rng, rows)

    B = tr.batch_size
    n_batches = math.ceil(len(train_idx) / B)
    bar = tqdm(total=tr.epochs * n_batches, initial=start * n_batches, disable=not progress,
               desc=protocol.name, unit="batch", leave=False)
    for epoch in range(start + 1, tr.epochs + 1):
        order = rng.permutation(train_idx)
        sums = np.zeros((2, net.n_layers))
        for b in range(n_batches):
            idx = order[b * B:(b + 1) * B]
            if len(idx) < 2:      # a saccade needs another image in the batch
                continue
            x = patches[idx]
            shifts, weights = net.pair_sets(len(idx), x.shape[1], rng, protocol.rule.negatives,
                                            protocol.stimulus.saccade_prob)
            stats = net.train_batch(x, opt, shifts, weights)
            sums += np.array([stats.loss, stats.modulated]) * len(idx)
            bar.update()
        means = sums / len(train_idx)
        for l in range(net.n_layers):
            rows.append(dict(epoch=epoch, stage="train", layer=l + 1, name="loss", value=float(means[0, l])))
            rows.append(dict(epoch=epoch, stage="train", layer=l + 1, name="modulated", value=float(means[1, l])))
        bad = [l + 1 for l in range(net.n_layers) if not np.isfinite(means[0, l])] or \
              [k for k, v in net.params.items() if not np.all(np.isfinite(v))]
        if bad:
            bar.close()
            last = run.latest_checkpoint()[0]
            raise TrainingDiverged(
                f"{protocol.name}: the loss became NaN or infinite in epoch {epoch} (layers/weights {bad}); "
                f"the last good checkpoint (epoch {last}) is kept in {run.directory}. "
                f"Lower [rule] lr (now {protocol.rule.lr:g}) or use optimizer = \"adam\".")
        if epoch % tr.checkpoint_every == 0 or epoch == tr.epochs:
            _checkpoint(run, epoch, net, opt, rng, rows)
            run.write_metrics(rows)
    bar.close()

    ev = protocol.evaluate
    layers = chosen_layers(ev.layers, net.n_layers)
    probe = probe_layers(net.features(patches), ds.labels, train_idx, test_idx, layers, ev.pooling, ev.C)
    rows += [dict(epoch=tr.epochs, stage="probe", layer=l, name="accuracy", value=a) for l, a in probe.items()]
    summary = {"probe": {str(l): a for l, a in probe.items()}}
    if ev.baseline:
        random_net = ClappStack(sizes, net.rule, initial)
        base = probe_layers(random_net.features(patches), ds.labels, train_idx, test_idx, layers, ev.pooling, ev.C)
        rows += [dict(epoch=0, stage="probe_random", layer=l, name="accuracy", value=a) for l, a in base.items()]
        summary["probe_random"] = {str(l): a for l, a in base.items()}
    run.write_metrics(rows)
    return summary


def _checkpoint(run, epoch, net, opt, rng, rows):
    opt_state = opt.state_dict()
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays.update({f"opt/{k}": v for k, v in opt_state.items() if k != "t"})
    run.save_checkpoint(epoch, arrays, {"rng": rng.bit_generator.state, "opt_t": opt_state.get("t", 0),
                                        "metrics": rows})
