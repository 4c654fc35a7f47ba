"""The named convolutional encoders a protocol may choose (``[model] arch``), as plain data.

Shared by the conv CLAPP stack and the conv hinge encoder, and read by the protocol schema (the
allowed names, the number of layers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ARCHITECTURES", "SMALL", "VGG6", "ConvLayerSpec", "parse_architecture", "smallest_input"]

#: The paper's VGG-6 encoder (Illing et al. 2021; the authors' ``arch``): 6 conv layers, "M" = 2x2 max-pool.
VGG6 = [128, 256, "M", 256, 512, "M", 1024, "M", 1024, "M"]
#: A small encoder for built-in data (16 x 16 patches -> 8 x 8 -> 4 x 4 maps); trains in seconds on a CPU.
SMALL = [32, "M", 64, "M"]
#: Named architectures a protocol may choose.
ARCHITECTURES = {"vgg6": VGG6, "small": SMALL}


@dataclass(frozen=True)
class ConvLayerSpec:
    """One CLAPP layer: a 3x3 conv to ``channels`` maps, ReLU, then a 2x2 max-pool if ``pool``."""

    channels: int
    pool: bool


def parse_architecture(arch) -> list[ConvLayerSpec]:
    """``[128, 256, "M", ...]`` (or a name in :data:`ARCHITECTURES`) -> one spec per conv layer.

    An ``"M"`` belongs to the conv layer before it, as in the authors' code (a
    module = conv + ReLU + pool), so the pool is in the layer's output path.
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
            specs[-1] = ConvLayerSpec(specs[-1].channels, True)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and item > 0:
            specs.append(ConvLayerSpec(int(item), False))
        else:
            raise ValueError(f"architecture {list(arch)!r}: entries are channel counts (int > 0) or 'M', "
                             f"got {item!r}")
    if not specs:
        raise ValueError("an architecture needs at least one conv layer")
    return specs


def smallest_input(arch) -> int:
    """Smallest input side the encoder can take: every 2x2 max-pool halves the maps, down to 1 x 1."""
    return 2 ** sum(spec.pool for spec in parse_architecture(arch))
