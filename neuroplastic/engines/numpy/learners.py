"""What the numpy engine trains, one kind per family of rule and encoder, behind one small interface.

- :class:`DenseClapp`: a dense CLAPP stack on glimpse sequences ``(n, T, n_in)``, cut in advance;
- :class:`ConvClapp`: a convolutional CLAPP stack on patch grids, cut (and cropped) batch by batch;
- :class:`TwoViews`: an encoder learning from two augmented views of whole images with the
  contrastive hinge loss (Tang, Yang & Amit 2022), by one of the methods of
  :mod:`neuroplastic.rules.hinge_methods`.

Each has ``params`` and ``optimizer`` (checkpointed), ``n_layers``, ``step(idx, rng, step, total)``
(one update from the training images ``idx``; returns ``{layer (from 1): {metric: value}}``),
``weight_metrics()`` (measurements of the weights at the end of an epoch, same form: CLAPP's
``retro_distance``) and ``features(params, probe)`` (what the probe reads). The engine (:mod:`~neuroplastic.engines.numpy.engine`) runs them all
through the same batches.

Greedy layer-wise learning (GLL) gives each of the ``L`` layers an equal share of the
``[train] epochs`` budget, counted in batches: layer ``l`` learns during batches
``[(l - 1) T / L, l T / L)`` of the ``T`` in the run and is frozen after. So every method sees the
same images the same number of times, and one epoch of a two-layer GLL run still trains both layers.
"""
from __future__ import annotations

import numpy as np

from ...data.augment import random_flip, random_window, two_views
from ...rules import RULES, retro_distance
from ...rules.hinge_conv import ConvViewEncoder
from ...rules.hinge_dense import ViewEncoder
from ...rules.hinge_methods import HingeSettings, dtp_grads
from ..prepare import layer_layouts
from .clapp_stack import ClappStack
from .conv_stack import ConvClappStack
from .backend import Backend, backend, host_floats
from .optim import GroupedOptimizer, make_optimizer

__all__ = ["ConvClapp", "DenseClapp", "TwoViews", "learner"]


def learner(protocol, prepared, rng, arrays: Backend | None = None):
    """The learner of ``protocol`` with fresh weights drawn from ``rng`` (numpy), computing on ``arrays``.

    The weights are drawn in numpy whatever the back end, then moved: every back end starts from the
    same numbers, and the numpy generator's stream is the same.
    """
    if RULES[protocol.rule.name].family == "views":
        net = TwoViews(protocol, prepared, rng, arrays)
    elif protocol.model.arch == "dense":
        net = DenseClapp(protocol, prepared, rng, arrays)
    else:
        net = ConvClapp(protocol, prepared, rng, arrays)
    net.params.update(net.arrays.params(net.params))   # in place: the learner's network holds this dict
    return net


#: Samples per forward pass when probe features are computed a chunk at a time.
_CHUNK = 1024


def _in_chunks(arrays: Backend, features, samples, to_input=lambda chunk: chunk) -> list:
    """``features`` of ``samples`` computed :data:`_CHUNK` samples at a time on ``arrays``' device: one
    numpy array per layer. For data read lazily from disk, or bound for another device."""
    parts = [[arrays.to_numpy(f) for f in features(arrays.asarray(to_input(samples[i:i + _CHUNK])))]
             for i in range(0, len(samples), _CHUNK)]
    return [np.concatenate(layer) for layer in zip(*parts)]


def _layer_stats(stats) -> dict:
    return {l + 1: {"loss": loss, "modulated": mod} for l, (loss, mod) in enumerate(zip(stats.loss, stats.modulated))}


def _on_host(metrics: dict) -> dict:
    """A step's per-layer metrics ``{layer: {name: 0-d array}}`` as floats, read from the device at once."""
    keys = [(l, name) for l, named in metrics.items() for name in named]
    values = host_floats([metrics[l][name] for l, name in keys])
    out: dict = {l: {} for l in metrics}
    for (l, name), v in zip(keys, values):
        out[l][name] = v
    return out


def retro_distances(params: dict, n_layers: int) -> dict:
    """``{layer: {"retro_distance": ||W_retro - W_pred^T||_F / ||W_pred||_F}}`` of a CLAPP stack; ``{}`` for CLAPP-s.

    How far each layer's learned retrodiction is from the transpose that CLAPP-s reads (the
    weight-transport problem): recorded after every epoch, so a run shows whether it shrinks.
    """
    return {l: {"retro_distance": retro_distance(params[f"{l}/W_pred"], params[f"{l}/W_retro"])}
            for l in range(1, n_layers + 1) if f"{l}/W_retro" in params}


class DenseClapp:
    """A dense CLAPP stack on glimpse sequences ``(n, T, n_in)``, cut in advance."""

    def __init__(self, protocol, prepared, rng, arrays: Backend | None = None):
        self.dtype, self.protocol, self.arrays = protocol.engine.dtype, protocol, arrays or backend(protocol)
        self.patches = prepared.stimulus.patches.astype(self.dtype)
        layouts = layer_layouts(protocol, prepared.stimulus)
        self.sizes = [self.patches.shape[-1], *(lay.n for lay in layouts)]
        self.net = ClappStack.init(self.sizes, protocol.rule.name, rng, dtype=self.dtype,
                                   init_scale=protocol.model.init_scale,
                                   pred_init_scale=protocol.model.pred_init_scale, layouts=layouts)
        self.params, self.n_layers = self.net.params, self.net.n_layers
        self.optimizer = make_optimizer(protocol.rule.optimizer, protocol.rule.lr)

    def step(self, idx, rng, step: int, total: int) -> dict:
        x = self.arrays.asarray(self.patches[idx])
        r, st = self.protocol.rule, self.protocol.stimulus
        shifts, weights = self.net.pair_sets(len(idx), x.shape[1], rng, r.negatives, st.saccade_prob)
        return _layer_stats(self.net.train_batch(x, self.optimizer, shifts, weights))

    def weight_metrics(self) -> dict:
        return retro_distances(self.params, self.n_layers)

    def features(self, params, probe) -> list:
        a = self.arrays
        stack = ClappStack(self.sizes, self.net.rule, a.params(params), self.net.layouts)
        patches = probe.stimulus.patches
        if isinstance(patches, np.ndarray) and a.name == "numpy":
            return stack.features(patches.astype(self.dtype))
        return _in_chunks(a, stack.features, patches, lambda chunk: np.asarray(chunk).astype(self.dtype))



class ConvClapp:
    """A convolutional CLAPP stack on patch grids, cut (and cropped) batch by batch."""

    def __init__(self, protocol, prepared, rng, arrays: Backend | None = None):
        m, r = protocol.model, protocol.rule
        self.protocol, self.grids, self.arrays = protocol, prepared.stimulus, arrays or backend(protocol)
        self.kwargs = dict(offsets=r.offsets, score=r.score, sampling=r.sampling)
        self.net = ConvClappStack.init(m.arch, 1, r.name, rng, dtype=protocol.engine.dtype, init_scale=m.init_scale,
                                       pred_init_scale=m.pred_init_scale, init=m.init, bias=m.bias, **self.kwargs)
        self.params, self.n_layers = self.net.params, self.net.n_layers
        self.optimizer = make_optimizer(r.optimizer, r.lr)

    def step(self, idx, rng, step: int, total: int) -> dict:
        x = self.arrays.asarray(self.grids.batch(idx, rng))
        r, st = self.protocol.rule, self.protocol.stimulus
        shifts, weights = self.net.pair_sets(len(idx), *self.grids.grid_shape, rng, r.negatives, st.saccade_prob)
        return _layer_stats(self.net.train_batch(x, self.optimizer, shifts, weights))

    def weight_metrics(self) -> dict:
        return retro_distances(self.params, self.n_layers)

    def features(self, params, probe) -> list:
        """Per-patch features (n, G_r G_c, C_l), or with mean pooling their mean (n, 1, C_l): the same
        probe input, without holding every patch of every layer in memory."""
        a = self.arrays
        net = ConvClappStack(self.net.arch, 1, self.net.rule, a.params(params), **self.kwargs)
        pool = self.protocol.evaluate.pooling == "mean"
        out = [[] for _ in range(net.n_layers)]
        for x in probe.stimulus.chunks():
            for l, f in enumerate(net.features(a.asarray(x))):
                f = a.to_numpy(f)
                out[l].append(f.mean(axis=1, keepdims=True) if pool else f)
        return [np.concatenate(o) for o in out]

    def probe_views(self, params, probe):
        """``views(idx, rng)``: :meth:`features` of the probe's images ``idx`` cut as training cuts them (a random
        crop window, mirrored at random with ``[stimulus] flip``): the augmented read-out's inputs."""
        a = self.arrays
        net = ConvClappStack(self.net.arch, 1, self.net.rule, a.params(params), **self.kwargs)
        pool = self.protocol.evaluate.pooling == "mean"

        def views(idx, rng):
            feats = [a.to_numpy(f) for f in net.features(a.asarray(probe.stimulus.batch(idx, rng)))]
            return [f.mean(axis=1, keepdims=True) if pool else f for f in feats]
        return views


class TwoViews:
    """A dense or conv encoder learning from two augmented views of whole images (the hinge rules).

    ``[model] arch = "dense"`` trains a :class:`~neuroplastic.rules.hinge_dense.ViewEncoder` on
    flattened images; a named convolutional architecture a
    :class:`~neuroplastic.rules.hinge_conv.ConvViewEncoder` on the images as maps (every method; DTP's
    inverses are then transposed convolutions). An in-memory data set is converted once; a lazily read
    one (STL-10 unlabeled) reads each batch. Colour images ``(n, h, w, C)`` are flattened to ``h w C``
    inputs, or read by the conv encoder as maps of ``C`` input channels.
    """

    def __init__(self, protocol, prepared, rng, arrays: Backend | None = None):
        m, r, st = protocol.model, protocol.rule, protocol.stimulus
        self.protocol, self.rule, self.dtype, self.arrays = (protocol, RULES[r.name], protocol.engine.dtype,
                                                               arrays or backend(protocol))
        ds = prepared.dataset
        self.images = np.asarray(ds.samples, dtype=self.dtype) if isinstance(ds.samples, np.ndarray) else ds.samples
        settings = dict(dtype=self.dtype, init_scale=m.init_scale, init=m.init)
        self.window = st.crop                  # views (and the probe's images) are crop x crop windows, 0: whole
        shape = (st.crop, st.crop, *self.images.shape[3:]) if st.crop else tuple(self.images.shape[1:])
        if m.arch == "dense":
            n_in = int(np.prod(shape))
            self.net = ViewEncoder.init([n_in, *m.layers], m.activation, self.rule.process, self.rule.feedback,
                                        r.head, rng, **settings)
        else:
            channels = int(self.images.shape[3]) if len(self.images.shape) == 4 else 1     # grey: one channel
            self.net = ConvViewEncoder.init(m.arch, m.activation, self.rule.process, self.rule.feedback, r.head, rng,
                                            in_channels=channels, head_input=r.head_input,
                                            size=tuple(int(s) for s in shape[:2]), **settings)
        self.params, self.n_layers = self.net.params, self.net.n_layers
        self.optimizer = GroupedOptimizer(lambda g: make_optimizer(r.optimizer, r.inverse_lr if g == "inverse"
                                                                   else r.lr))
        self.hinge = HingeSettings(r.tau, r.delta, r.negatives, r.negative_weight)
        self.views = dict(kind=st.augment, crop_pad=st.crop_pad, flip=st.flip, jitter_strength=st.jitter,
                          blur_sigma=st.blur, window=st.crop)

    def _input(self, images):
        """Images ``(N, h, w)`` or ``(N, h, w, C)`` as the encoder reads them: flattened to ``h w C`` (dense) or as
        maps of ``C`` channels (conv; grey images get their one channel there)."""
        return images if isinstance(self.net, ConvViewEncoder) else images.reshape(len(images), -1)

    def step(self, idx, rng, step: int, total: int) -> dict:
        v1, v2 = two_views(np.asarray(self.images[idx], dtype=self.dtype), rng, **self.views)
        x1, x2 = self.arrays.asarray(self._input(v1)), self.arrays.asarray(self._input(v2))
        net, opt, rule, params, L = self.net, self.optimizer, self.rule, self.net.params, self.net.n_layers
        if rule.process == "e2e":
            res, grads = net.e2e_grads(x1, x2, self.hinge, rule.feedback)
            opt.step("all", params, grads)
            return _on_host({L: {"loss": res.loss, "modulated": res.active}})
        if rule.process in ("gll", "rll"):
            l = step * L // total if rule.process == "gll" else int(rng.integers(L))
            h1 = net.layer_input(x1, l)                    # the frozen layers below give this layer its input
            h2 = net.layer_input(x2, l)
            res, grads = net.layer_grads(l, h1, h2, self.hinge, rule.feedback)
            opt.step(f"layer{l + 1}", params, grads)
            return _on_host({l + 1: {"loss": res.loss, "modulated": res.active}})
        if rule.process != "dtp":
            raise ValueError(f"rule {rule.name!r}: unknown process {rule.process!r}; known: 'e2e', 'gll', 'rll', 'dtp'")
        r = self.protocol.rule
        conv = isinstance(net, ConvViewEncoder)
        shapes = {l: net.inverse_input_shape(l, x1.shape[1:3]) if conv else (net.sizes[l],) for l in range(1, L)}
        noise = {l: self.arrays.asarray((r.inverse_noise * rng.standard_normal((2 * len(x1), *shape)))
                                        .astype(self.dtype)) for l, shape in shapes.items()}
        if conv:
            res, grads = net.dtp_grads(x1, x2, self.hinge, r.target_step, noise)
        else:
            res, grads = dtp_grads(params, net.activation, x1, x2, self.hinge, r.target_step, noise)
        inverse = {k: v for k, v in grads.items() if k.endswith(("/V", "/c"))}
        opt.step("forward", params, {k: v for k, v in grads.items() if k not in inverse})
        if inverse:
            opt.step("inverse", params, inverse)
        out = {l + 1: {"target_loss": res.layer_losses[l]} for l in range(L)}
        for l in range(1, L):
            out[l + 1]["inverse_loss"] = res.inverse_losses[l - 1]
        out[L].update(loss=res.hinge.loss, modulated=res.hinge.active)
        return _on_host(out)

    def weight_metrics(self) -> dict:
        return {}

    def _encoder(self, params):
        """The encoder with weights ``params``, on the learner's array back end."""
        if isinstance(self.net, ConvViewEncoder):
            return ConvViewEncoder(self.net.arch, self.net.activation, self.arrays.params(params), self.net.in_channels)
        return ViewEncoder(self.net.sizes, self.net.activation, self.arrays.params(params))

    def features(self, params, probe) -> list:
        """Each layer's rates for every image, as one "glimpse": (n, 1, n_l)."""
        a, net = self.arrays, self._encoder(params)
        images = np.asarray(probe.dataset.samples, dtype=self.dtype)
        if self.window:
            images = random_window(images, None, self.window)           # the centre window the views are cut like
        if a.name == "numpy":
            return [f[:, None, :] for f in net.features(self._input(images))]
        return [f[:, None, :] for f in _in_chunks(a, net.features, images, self._input)]

    def probe_views(self, params, probe):
        """``views(idx, rng)``: :meth:`features` of a random crop window of the probe's images ``idx``, mirrored
        with probability 1/2 (the authors' read-outs: ``RandomCrop(64)``, ``RandomHorizontalFlip``)."""
        net = self._encoder(params)
        images = probe.dataset.samples

        def views(idx, rng):
            x = np.asarray(images[idx], dtype=self.dtype)
            x = random_flip(random_window(x, rng, self.window) if self.window else x, rng)
            return [f[:, None, :] for f in _in_chunks(self.arrays, net.features, x, self._input)]
        return views
