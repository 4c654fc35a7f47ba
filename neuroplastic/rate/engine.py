"""Train a protocol with the numpy engine: data -> glimpses -> CLAPP stack -> probes -> run directory.

``[model] arch = "dense"`` trains a :class:`~neuroplastic.rate.network.ClappStack` on flattened
glimpse sequences; a named convolutional architecture trains a
:class:`~neuroplastic.rate.conv_network.ConvClappStack` on CPC patch grids cut batch by batch
(:class:`~neuroplastic.stimuli.PatchGrids`). Both go through the same loop.

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

from ..engines import (prepare, probe_encoder, raise_diverged, require_defaults, resume_training_state,
                       save_training_state, seed_sequence)
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
    if RULES[protocol.rule.name].family == "clapp" and protocol.model.arch == "dense":
        require_defaults(protocol, ["stimulus.crop"], "dense layers see every glimpse of the whole sample "
                         "(crops are cut for the convolutional encoders, [model] arch)")
    if protocol.model.arch != "dense":
        from ..data import DATASETS

        domain = DATASETS[protocol.data.source].domain
        if domain != "image":
            raise ProtocolError(protocol.source, "model.arch", f"= {protocol.model.arch!r}: the convolutional "
                                f"encoders cut patch grids from grey images, and {protocol.data.source!r} holds "
                                f"{domain}; allowed here: 'dense'")


class _Dense:
    """A dense CLAPP stack on glimpse sequences ``(n, T, n_in)``, cut in advance."""

    def __init__(self, protocol, prepared, rng):
        self.dtype, self.protocol = protocol.engine.dtype, protocol
        self.patches = prepared.stimulus.patches.astype(self.dtype)
        self.sizes = [self.patches.shape[-1], *protocol.model.layers]
        self.net = ClappStack.init(self.sizes, protocol.rule.name, rng, dtype=self.dtype,
                                   init_scale=protocol.model.init_scale,
                                   pred_init_scale=protocol.model.pred_init_scale)

    def batch(self, idx, rng):
        x = self.patches[idx]
        r, st = self.protocol.rule, self.protocol.stimulus
        return (x, *self.net.pair_sets(len(idx), x.shape[1], rng, r.negatives, st.saccade_prob))

    def with_params(self, params) -> ClappStack:
        return ClappStack(self.sizes, self.net.rule, params)

    def features(self, net, stimulus) -> list:
        return net.features(stimulus.patches.astype(self.dtype))


class _Conv:
    """A convolutional CLAPP stack on patch grids, cut (and cropped) batch by batch."""

    def __init__(self, protocol, prepared, rng):
        from .conv_network import ConvClappStack

        m, r = protocol.model, protocol.rule
        self.protocol, self.grids = protocol, prepared.stimulus
        self.kwargs = dict(offsets=r.offsets, score=r.score)
        self.net = ConvClappStack.init(m.arch, 1, r.name, rng, dtype=protocol.engine.dtype, init_scale=m.init_scale,
                                       pred_init_scale=m.pred_init_scale, **self.kwargs)

    def batch(self, idx, rng):
        x = self.grids.batch(idx, rng)
        r, st = self.protocol.rule, self.protocol.stimulus
        return (x, *self.net.pair_sets(len(idx), *self.grids.grid_shape, rng, r.negatives, st.saccade_prob))

    def with_params(self, params):
        from .conv_network import ConvClappStack

        return ConvClappStack(self.net.arch, 1, self.net.rule, params, **self.kwargs)

    def features(self, net, grids) -> list:
        """Per-patch features (n, G_r G_c, C_l), or with mean pooling their mean (n, 1, C_l): the same
        probe input, without holding every patch of every layer in memory."""
        pool = self.protocol.evaluate.pooling == "mean"
        out = [[] for _ in range(net.n_layers)]
        for x in grids.chunks():
            for l, f in enumerate(net.features(x)):
                out[l].append(f.mean(axis=1, keepdims=True) if pool else f)
        return [np.concatenate(o) for o in out]


def train(protocol, run, progress: bool = True, prepared=None) -> dict:
    """Train, checkpoint, probe and write everything into ``run``; return the summary.

    ``prepared`` is :func:`neuroplastic.engines.prepare`'s result (computed here if not given).
    Rules of the "views" family (the hinge rules) are trained by :func:`neuroplastic.tang.engine.train`.
    """
    if RULES[protocol.rule.name].family == "views":
        from ..tang.engine import train as train_views

        return train_views(protocol, run, progress, prepared)
    prepared = prepared if prepared is not None else prepare(protocol)
    retain_freed_memory()                  # reuse each step's temporaries instead of page-faulting them in
    kind = _Dense if protocol.model.arch == "dense" else _Conv
    model = kind(protocol, prepared, np.random.default_rng(seed_sequence(protocol, 0)))
    net = model.net
    initial = {k: v.copy() for k, v in net.params.items()}
    opt = make_optimizer(protocol.rule.optimizer, protocol.rule.lr)
    rng = np.random.default_rng(seed_sequence(protocol, 1))
    tr, train_idx = protocol.train, prepared.train_idx

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
            x, shifts, weights = model.batch(idx, rng)
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

    probe = prepared.probe_set()
    features = model.features(net, probe.stimulus)
    random_features = model.features(model.with_params(initial), probe.stimulus)
    probe_rows, summary = probe_encoder(protocol, features, random_features, probe.dataset.labels,
                                        probe.train_idx, probe.test_idx, run=run)
    rows += probe_rows
    run.write_metrics(rows)
    return summary
