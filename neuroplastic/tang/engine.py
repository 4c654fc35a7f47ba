"""Train a two-view (hinge) protocol with the numpy engine: images -> two views -> encoder -> probes.

The numpy engine hands protocols whose rule is of the ``"views"`` family to
:func:`train`. ``[model] arch = "dense"`` trains a
:class:`~neuroplastic.tang.network.ViewEncoder` on flattened images; a named
convolutional architecture trains a :class:`~neuroplastic.tang.conv.ConvViewEncoder`
on the images as maps (end-to-end and layer-wise methods; DTP is dense only).

Randomness comes from the same three streams as the CLAPP engine: weights
(k = 0), training (batch order, augmentations, the random layer of RLL, DTP's
noise; k = 1) and the probe split (k = 2). Weights, optimiser state and the
training generator are checkpointed every epoch, so a resumed run is
bit-identical to an uninterrupted one.

Greedy layer-wise learning (GLL) gives each of the ``L`` layers an equal share
of the ``[train] epochs`` budget, counted in batches: layer ``l`` learns during
batches ``[(l - 1) T / L, l T / L)`` of the ``T`` in the run and is frozen after.
So every method sees the same images the same number of times, and one epoch
of a two-layer GLL run still trains both layers.
"""
from __future__ import annotations

import math

import numpy as np
from tqdm.auto import tqdm

from ..data.augment import two_views
from ..engines import (prepare, probe_encoder, raise_diverged, require_defaults, resume_training_state,
                       save_training_state, seed_sequence)
from ..protocol import ProtocolError
from ..rate.optim import make_optimizer
from ..rules import RULES
from .conv import ConvViewEncoder
from .methods import HingeSettings, dtp_grads
from .network import ViewEncoder

__all__ = ["GroupedOptimizer", "check", "train"]


def check(protocol, running: bool = True) -> None:
    """A hinge rule needs ``[stimulus] kind = "views"`` of images; a CLAPP rule needs glimpses."""
    from ..data import DATASETS

    rule = RULES[protocol.rule.name]
    kind = protocol.stimulus.kind
    if rule.family == "views":
        if kind != "views":
            raise ProtocolError(protocol.source, "stimulus.kind",
                                f"= {kind!r}: rule {rule.name!r} learns from two augmented views of whole "
                                "images; allowed: 'views'")
        domain = DATASETS[protocol.data.source].domain
        if domain != "image":
            raise ProtocolError(protocol.source, "data.source",
                                f"= {protocol.data.source!r}: rule {rule.name!r} augments grey images, and "
                                f"this source holds {domain}; choose an image source")
        require_defaults(protocol, ["stimulus.crop"], f"rule {rule.name!r} sees whole images (its views are "
                         "shifted by [stimulus] crop_pad, not cropped)")
        if rule.process == "dtp":
            require_defaults(protocol, ["model.arch"], f"rule {rule.name!r} propagates targets through learned "
                             "inverses of dense layers (not implemented for conv encoders)")
    elif kind == "views":
        views = ", ".join(repr(n) for n, r in RULES.items() if r.family == "views")
        raise ProtocolError(protocol.source, "stimulus.kind",
                            f"= 'views': rule {rule.name!r} learns from glimpse sequences (kind = 'glimpses'); "
                            f"views are for the hinge rules ({views})")


class GroupedOptimizer:
    """One optimiser per group of parameters (a layer with its head, all the inverses, ...).

    Each group keeps its own Adam step count, as the authors keep one torch
    optimiser per layer: a layer that starts learning late (GLL) starts Adam's
    bias correction afresh. ``make(group)`` returns a new optimiser for a group.
    """

    def __init__(self, make):
        self.make = make
        self.groups: dict = {}

    def _group(self, name: str):
        if name not in self.groups:
            self.groups[name] = self.make(name)
        return self.groups[name]

    def step(self, group: str, params: dict, grads: dict) -> None:
        self._group(group).step(params, grads)

    def state_dict(self) -> dict:
        return {f"{g}/{k}": v for g, opt in self.groups.items() for k, v in opt.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        parts: dict = {}
        for key, value in state.items():
            if "/" in key:                            # "t" is the (unused) step count of save_training_state
                group, rest = key.split("/", 1)
                parts.setdefault(group, {})[rest] = value
        self.groups = {}
        for group, sub in parts.items():
            self._group(group).load_state_dict(sub)


def _encoder(protocol, rule, n_in: int, rng) -> "ViewEncoder | ConvViewEncoder":
    """The protocol's encoder with fresh weights: dense layers on ``n_in`` pixels, or ``[model] arch``'s conv layers."""
    m = protocol.model
    settings = dict(dtype=protocol.engine.dtype, init_scale=m.init_scale)
    if m.arch == "dense":
        return ViewEncoder.init([n_in, *m.layers], m.activation, rule.process, rule.feedback, protocol.rule.head,
                                rng, **settings)
    return ConvViewEncoder.init(m.arch, m.activation, rule.process, rule.feedback, protocol.rule.head, rng,
                                **settings)


def _with_params(net, params: dict):
    """An encoder like ``net`` with other weights (the random-encoder baseline)."""
    if isinstance(net, ConvViewEncoder):
        return ConvViewEncoder(net.arch, net.activation, params, net.in_channels)
    return ViewEncoder(net.sizes, net.activation, params)


def _as_input(net, images):
    """Images ``(N, h, w)`` as the encoder reads them: flattened (dense) or as one-channel maps (conv)."""
    return images if isinstance(net, ConvViewEncoder) else images.reshape(len(images), -1)


def _step(rule, net, opt: GroupedOptimizer, x1, x2, step: int, total: int, rng, protocol,
          hinge: HingeSettings) -> dict:
    """One update from views ``x1, x2`` (see :func:`_as_input`); returns ``{layer (1-based): {metric: value}}``."""
    params, act, L = net.params, net.activation, net.n_layers
    if rule.process == "e2e":
        res, grads = net.e2e_grads(x1, x2, hinge, rule.feedback)
        opt.step("all", params, grads)
        return {L: {"loss": res.loss, "modulated": res.active}}
    if rule.process in ("gll", "rll"):
        l = step * L // total if rule.process == "gll" else int(rng.integers(L))
        h1 = net.layer_input(x1, l)                    # the frozen layers below give this layer its input
        h2 = net.layer_input(x2, l)
        res, grads = net.layer_grads(l, h1, h2, hinge, rule.feedback)
        opt.step(f"layer{l + 1}", params, grads)
        return {l + 1: {"loss": res.loss, "modulated": res.active}}
    sigma = protocol.rule.inverse_noise
    noise = {l: (sigma * rng.standard_normal((2 * len(x1), net.sizes[l]))).astype(x1.dtype) for l in range(1, L)}
    res, grads = dtp_grads(params, act, x1, x2, hinge, protocol.rule.target_step, noise)
    inverse = {k: v for k, v in grads.items() if k.endswith(("/V", "/c"))}
    opt.step("forward", params, {k: v for k, v in grads.items() if k not in inverse})
    if inverse:
        opt.step("inverse", params, inverse)
    out = {l + 1: {"target_loss": res.layer_losses[l]} for l in range(L)}
    for l in range(1, L):
        out[l + 1]["inverse_loss"] = res.inverse_losses[l - 1]
    out[L].update(loss=res.hinge.loss, modulated=res.hinge.active)
    return out


def train(protocol, run, progress: bool = True, prepared=None) -> dict:
    """Train, checkpoint, probe and write everything into ``run``; return the summary.

    ``prepared`` is :func:`neuroplastic.engines.prepare`'s result; these rules see whole
    images (``dataset.samples``, n x h x w), not glimpses.
    """
    check(protocol)
    prepared = prepared if prepared is not None else prepare(protocol)
    ds, train_idx = prepared.dataset, prepared.train_idx
    rule = RULES[protocol.rule.name]
    dtype = protocol.engine.dtype
    # An in-memory data set is converted once; a lazily read one (STL-10 unlabeled) reads each batch.
    images = np.asarray(ds.samples, dtype=dtype) if isinstance(ds.samples, np.ndarray) else ds.samples
    r, st, tr = protocol.rule, protocol.stimulus, protocol.train
    net = _encoder(protocol, rule, int(np.prod(images.shape[1:])), np.random.default_rng(seed_sequence(protocol, 0)))
    initial = {k: v.copy() for k, v in net.params.items()}
    opt = GroupedOptimizer(lambda g: make_optimizer(r.optimizer, r.inverse_lr if g == "inverse" else r.lr))
    rng = np.random.default_rng(seed_sequence(protocol, 1))
    hinge = HingeSettings(r.tau, r.delta, r.negatives)
    views = dict(crop_pad=st.crop_pad, flip=st.flip, jitter_strength=st.jitter, blur_sigma=st.blur)

    start, rows = resume_training_state(run, net.params, rng, opt)
    B = tr.batch_size
    n_batches = math.ceil(len(train_idx) / B)
    total = tr.epochs * n_batches
    bar = tqdm(total=total, initial=start * n_batches, disable=not progress, desc=protocol.name,
               unit="batch", leave=False)
    for epoch in range(start + 1, tr.epochs + 1):
        order = rng.permutation(train_idx)
        sums: dict = {}                                # (layer, metric) -> [sum weighted by images, images]
        for b in range(n_batches):
            idx = order[b * B:(b + 1) * B]
            bar.update()
            if len(idx) < 2:                           # the negatives are other images of the batch
                continue
            v1, v2 = two_views(np.asarray(images[idx], dtype=dtype), rng, **views)
            stats = _step(rule, net, opt, _as_input(net, v1), _as_input(net, v2),
                          (epoch - 1) * n_batches + b, total, rng, protocol, hinge)
            for layer, metrics in stats.items():
                for name, value in metrics.items():
                    s = sums.setdefault((layer, name), [0.0, 0])
                    s[0] += value * len(idx)
                    s[1] += len(idx)
        means = {key: s / n for key, (s, n) in sorted(sums.items())}
        rows += [dict(epoch=epoch, stage="train", layer=layer, name=name, value=float(v))
                 for (layer, name), v in means.items()]
        losses = [means.get((l, "loss"), 0.0) for l in range(1, net.n_layers + 1)]
        if not (all(np.isfinite(v) for v in means.values())
                and all(np.all(np.isfinite(v)) for v in net.params.values())):
            bar.close()
            raise_diverged(protocol, run, epoch, [v if np.isfinite(v) else np.nan for v in losses], net.params)
        if epoch % tr.checkpoint_every == 0 or epoch == tr.epochs:
            save_training_state(run, epoch, net.params, rng, rows, opt)
    bar.close()

    random_net = _with_params(net, initial)
    probe = prepared.probe_set()
    x = _as_input(net, np.asarray(probe.dataset.samples, dtype=dtype))
    features = [f[:, None, :] for f in net.features(x)]         # (n, 1, n_l): one "glimpse", the image
    random_features = [f[:, None, :] for f in random_net.features(x)]
    probe_rows, summary = probe_encoder(protocol, features, random_features, probe.dataset.labels,
                                        probe.train_idx, probe.test_idx, run=run)
    rows += probe_rows
    run.write_metrics(rows)
    return summary
