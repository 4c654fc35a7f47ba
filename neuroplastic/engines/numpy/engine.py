"""The numpy engine: data -> glimpses, patch grids or two views -> explicit updates of rules/ -> probes.

"numpy" names the reference the engine is: the same code runs on torch or CuPy arrays, on the CPU or
a GPU (``[engine] array``, ``[engine] device``; :mod:`~neuroplastic.engines.numpy.backend`).

Every family of rule and encoder (:mod:`~neuroplastic.engines.numpy.learners`) goes through the same batches: each epoch is a
random permutation of the training images, cut into ``[train] batch_size`` batches (a batch of one
image is skipped: a saccade, or a negative, needs another image of the batch). An epoch's metrics
are means over the images that learned, weighted by batch size, and the learner's measurements of
the weights at its end (CLAPP: ``retro_distance``, the initial value in the summary).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ...data import DATASETS
from ...errors import ProtocolError
from ...rules import RULES
from ...rules.architectures import ARCHITECTURES, parse_architecture
from ..base import Engine, EpochResult, Model, require, require_defaults
from .backend import backend
from .learners import learner
from .memory import retain_freed_memory

__all__ = ["ENGINE", "NumpyEngine"]


class NumpyEngine(Engine):
    """The rate reference: CLAPP and CLAPP-s (dense and conv) and the two-view hinge rules."""

    name = "numpy"

    def check(self, protocol, running: bool = True) -> None:
        """The rate neuron only; a hinge rule needs two views of images, a CLAPP rule glimpses."""
        require(protocol, "engine.variant", ("rate",), "the numpy engine is the rate reference (the spiking "
                "variant needs [engine] name = \"brian\")")
        backend(protocol, running)           # the array library and device: installed, and there
        if protocol.model.arch != "dense":
            require_defaults(protocol, ["model.layers"], f"[model] arch = {protocol.model.arch!r} names every "
                             "layer of the encoder (layers sizes the layers of arch = 'dense')")
        rule, kind = RULES[protocol.rule.name], protocol.stimulus.kind
        domain = DATASETS[protocol.data.source].domain
        if protocol.model.init == "torch":
            require_defaults(protocol, ["model.init_scale", "model.pred_init_scale"], "init = 'torch' draws "
                             "PyTorch's default ranges (the scales are those of init = 'he')")
        if rule.family == "views":
            if kind != "views":
                raise ProtocolError(protocol.source, "stimulus.kind",
                                    f"= {kind!r}: rule {rule.name!r} learns from two augmented views of whole "
                                    "images; allowed: 'views'")
            if domain != "image":
                raise ProtocolError(protocol.source, "data.source",
                                    f"= {protocol.data.source!r}: rule {rule.name!r} augments images, and "
                                    f"this source holds {domain}; choose an image source")
            if protocol.model.arch == "dense":
                require_defaults(protocol, ["rule.head_input"], "a dense encoder's heads read its layers' units "
                                 "(head_input is what a convolutional encoder's heads read of its maps, [model] "
                                 "arch)")
            return
        if kind == "views":
            views = ", ".join(repr(n) for n, r in RULES.items() if r.family == "views")
            raise ProtocolError(protocol.source, "stimulus.kind",
                                f"= 'views': rule {rule.name!r} learns from glimpse sequences (kind = 'glimpses'); "
                                f"views are for the hinge rules ({views})")
        if protocol.model.arch == "dense":
            require_defaults(protocol, ["stimulus.crop", "stimulus.flip", "stimulus.mean", "stimulus.std"],
                             "dense layers see every glimpse of the whole sample as it is (crops, mirrors and "
                             "normalisation are for the convolutional encoders' patch grids, [model] arch)")
            require_defaults(protocol, ["rule.offsets", "rule.score", "rule.sampling", "model.init", "model.bias"],
                             "dense layers predict the next glimpse of the sequence (row offsets, the score per "
                             "location or patch, the authors' sampling of patches, their init and conv biases are "
                             "for the convolutional encoders, [model] arch)")
        elif domain != "image":
            raise ProtocolError(protocol.source, "model.arch", f"= {protocol.model.arch!r}: the convolutional "
                                f"encoders cut patch grids from grey images, and {protocol.data.source!r} holds "
                                f"{domain}; allowed here: 'dense'")
        elif any(spec.linear for spec in parse_architecture(protocol.model.arch)):
            plain = [n for n in ARCHITECTURES if not any(spec.linear for spec in parse_architecture(n))]
            raise ProtocolError(protocol.source, "model.arch", f"= {protocol.model.arch!r}: its linear layers are "
                                f"for the hinge rules, and rule {rule.name!r} trains rate neurons (relu) in every "
                                f"layer; allowed here: {', '.join(map(repr, ['dense', *plain]))}")

    def init(self, protocol, prepared, rng) -> Model:
        retain_freed_memory()           # reuse each step's temporaries instead of page-faulting them in
        arrays = backend(protocol)
        net = learner(protocol, prepared, rng, arrays)
        batches = _Batches(net, prepared.train_idx, protocol.train.batch_size, protocol.train.epochs)
        # the fresh weights' measurements (CLAPP: retro_distance before any learning) go into the summary
        initial: dict = {}
        for layer, metrics in net.weight_metrics().items():
            for name, value in metrics.items():
                initial.setdefault(f"{name}_initial", {})[str(layer)] = value
        return Model(net.params, net.n_layers, net=batches, optimizer=net.optimizer, steps=batches.per_epoch,
                     summary=initial, arrays=None if arrays.name == "numpy" else arrays)

    def epoch(self, model, epoch, rng, tick) -> EpochResult:
        batches, n_batches = model.net, model.steps
        net, B, total = batches.learner, batches.size, n_batches * batches.epochs
        order = rng.permutation(batches.train_idx)
        sums: dict = {}                                # (layer, metric) -> [sum weighted by images, images]
        for b in range(n_batches):
            idx = order[b * B:(b + 1) * B]
            if len(idx) >= 2:
                for layer, metrics in net.step(idx, rng, (epoch - 1) * n_batches + b, total).items():
                    for name, value in metrics.items():
                        s = sums.setdefault((layer, name), [0.0, 0])
                        s[0] += value * len(idx)
                        s[1] += len(idx)
            tick()
        means = {key: s / n for key, (s, n) in sums.items()}
        for layer, metrics in net.weight_metrics().items():   # the weights as the epoch leaves them
            means.update({(layer, name): value for name, value in metrics.items()})
        return EpochResult(means)

    def features(self, model, params, probe) -> list:
        return model.net.learner.features(params, probe)

    def probe_views(self, model, params, probe):
        views = getattr(model.net.learner, "probe_views", None)
        return None if views is None else views(params, probe)


class _Batches(NamedTuple):
    """A learner and how its training images are cut: ``per_epoch`` batches of ``size`` for ``epochs``."""

    learner: object
    train_idx: np.ndarray
    size: int
    epochs: int

    @property
    def per_epoch(self) -> int:
        return math.ceil(len(self.train_idx) / self.size)


#: The numpy engine, as the registry finds it.
ENGINE = NumpyEngine()
