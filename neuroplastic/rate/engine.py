"""Train a protocol with the numpy engine: data -> glimpses -> CLAPP stack -> probes -> run directory.

Randomness comes from three generators seeded by ``(seed, k)``: the weights
(k = 0), the training stream (batches, saccades, negatives; k = 1) and the
probe split (k = 2). The training generator's state is checkpointed with the
weights and the optimiser, so a resumed run is bit-identical to an
uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
from tqdm.auto import tqdm

from ..engines import (prepare, probe_encoder, raise_diverged, resume_training_state, save_training_state,
                       seed_sequence)
from ..protocol import ProtocolError
from ..rules import RULES
from .memory import retain_freed_memory
from .network import ClappStack
from .optim import make_optimizer

__all__ = ["check", "train"]


def check(protocol, running: bool = True) -> None:
    """The numpy engine simulates the rate neuron only; rule and stimulus must fit (see tang.engine.check)."""
    if protocol.engine.variant != "rate":
        raise ProtocolError(protocol.source, "engine.variant",
                            f"= {protocol.engine.variant!r}: the numpy engine is the rate reference; allowed: "
                            "'rate' (the spiking variant needs [engine] name = \"brian\")")
    from ..tang.engine import check as check_views

    check_views(protocol, running)


def train(protocol, run, progress: bool = True, prepared=None) -> dict:
    """Train, checkpoint, probe and write everything into ``run``; return the summary.

    ``prepared`` is :func:`neuroplastic.engines.prepare`'s result (computed here if not given).
    Rules of the "views" family (the hinge rules) are trained by :func:`neuroplastic.tang.engine.train`.
    """
    if RULES[protocol.rule.name].family == "views":
        from ..tang.engine import train as train_views

        return train_views(protocol, run, progress, prepared)
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
    tr = protocol.train

    start, rows = resume_training_state(run, net.params, rng, opt)
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
        if not (np.all(np.isfinite(means[0])) and all(np.all(np.isfinite(v)) for v in net.params.values())):
            bar.close()
            raise_diverged(protocol, run, epoch, means[0], net.params)
        if epoch % tr.checkpoint_every == 0 or epoch == tr.epochs:
            save_training_state(run, epoch, net.params, rng, rows, opt)
    bar.close()

    random_net = ClappStack(sizes, net.rule, initial)
    probe_rows, summary = probe_encoder(protocol, net.features(patches), random_net.features(patches),
                                        ds.labels, train_idx, test_idx, run=run)
    rows += probe_rows
    run.write_metrics(rows)
    return summary

