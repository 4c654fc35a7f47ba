"""The named convolutional encoders a protocol may choose (``[model] arch``), as plain data.

Shared by the conv CLAPP stack and the conv hinge encoder, and read by the protocol schema (the
allowed names, the number of layers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ARCHITECTURES", "SMALL", "TANG_CONV6", "TANG_VGG6", "VGG6", "ConvLayerSpec", "parse_architecture",
           "smallest_input"]

#: The paper's VGG-6 encoder (Illing et al. 2021; the authors' ``arch``): 6 conv layers, "M" = 2x2 max-pool.
VGG6 = [128, 256, "M", 256, 512, "M", 1024, "M", 1024, "M"]
#: A small encoder for built-in data (16 x 16 patches -> 8 x 8 -> 4 x 4 maps); trains in seconds on a CPU.
SMALL = [32, "M", 64, "M"]
#: Tang, Yang & Amit (2022), CIFAR (32 x 32 RGB): the authors' ``CONV6`` (5 conv layers; the sixth layer
#: of the name is the classifier). As their code builds it, only layers 1 and 3 have a non-linearity;
#: layers 2, 4 and 5 are a convolution and a max-pool ("L"). Maps 32, 16, 16, 8, 4; their heads read the
#: flattened map ([rule] head_input = "flatten"; layer 5: 4 x 4 x 512 = 8192 inputs).
TANG_CONV6 = [32, 32, "L", "M", 64, 64, "L", "M", 512, "L", "M"]
#: Tang, Yang & Amit (2022), STL-10 (64 x 64 RGB crops): the authors' ``VGG6``, the same layers as CLAPP's
#: "vgg6" (every layer with its non-linearity, their hardtanh). It differs from "vgg6" only outside this
#: list: RGB input and heads on the 2 x 2 average-pooled, flattened map ([rule] head_input = "pool2").
TANG_VGG6 = list(VGG6)
#: Tang, Yang & Amit (2022), CIFAR: the encoder their DTP code trains (SSL-DTP's ``NetDTP``), four conv layers
#: each with its non-linearity (their tanh) and a max-pool: maps 16, 8, 4, 2. Its top reads the flattened
#: 2 x 2 x 256 map (head_input = "flatten"); each layer from the second has a transposed-conv inverse.
TANG_DTP = [32, "M", 64, "M", 128, "M", 256, "M"]
#: Named architectures a protocol may choose.
ARCHITECTURES = {"vgg6": VGG6, "small": SMALL, "tang_conv6": TANG_CONV6, "tang_vgg6": TANG_VGG6,
                 "tang_dtp": TANG_DTP}


@dataclass(frozen=True)
class ConvLayerSpec:
    """One layer: a 3x3 conv to ``channels`` maps, the non-linearity (none if ``linear``), then a 2x2
    max-pool if ``pool``. Only the hinge encoders have linear layers; the CLAPP stack refuses them."""

    channels: int
    pool: bool
    linear: bool = False


def parse_architecture(arch) -> list[ConvLayerSpec]:
    """``[128, 256, "M", ...]`` (or a name in :data:`ARCHITECTURES`) -> one spec per conv layer.

    An ``"M"`` belongs to the conv layer before it, as in the authors' code (a
    module = conv + ReLU + pool), so the pool is in the layer's output path. An
    ``"L"`` right after a channel count makes that layer linear (no non-linearity
    before its pool), as in Tang et al.'s ``CONV6``.
    """
    if isinstance(arch, str):
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(map(repr, ARCHITECTURES))}")
        arch = ARCHITECTURES[arch]
    specs: list[ConvLayerSpec] = []
    for item in arch:
        if item == "M":
            if not specs or specs[-1].pool:
                raise ValueError(f"architecture {list(arch)!r}: 'M' must follow a conv layer (a channel count)")
            specs[-1] = ConvLayerSpec(specs[-1].channels, True, specs[-1].linear)
        elif item == "L":
            if not specs or specs[-1].pool or specs[-1].linear:
                raise ValueError(f"architecture {list(arch)!r}: 'L' must follow a channel count directly "
                                 "(before the layer's 'M')")
            specs[-1] = ConvLayerSpec(specs[-1].channels, False, True)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and item > 0:
            specs.append(ConvLayerSpec(int(item), False))
        else:
            raise ValueError(f"architecture {list(arch)!r}: entries are channel counts (int > 0), 'M' or 'L', "
                             f"got {item!r}")
    if not specs:
        raise ValueError("an architecture needs at least one conv layer")
    return specs


def smallest_input(arch) -> int:
    """Smallest input side the encoder can take: every 2x2 max-pool halves the maps, down to 1 x 1."""
    return 2 ** sum(spec.pool for spec in parse_architecture(arch))


def odd_pooled_map(arch, size, first: int = 1) -> tuple[int, tuple[int, int]] | None:
    """The first layer (1-based, from ``first`` on) whose max-pool gets maps of an odd side from inputs of
    ``size = (h, w)``, with that map's side; ``None`` if every pool halves its maps evenly. DTP's inverses,
    transposed convolutions of stride 2, undo only an even pool."""
    side = (int(size[0]), int(size[1]))
    for l, spec in enumerate(parse_architecture(arch), start=1):
        if spec.pool and l >= first and (side[0] % 2 or side[1] % 2):
            return l, side
        side = (side[0] // 2, side[1] // 2) if spec.pool else side
    return None
