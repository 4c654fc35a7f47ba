"""Glimpse sequences from images: the eye scans a grid of patches.

Consecutive glimpses of one image are *fixations* (y = +1); a jump to the
glimpse at the same position of another image is a *saccade* (y = -1). Which
steps are saccades is decided by the training loop (it depends on the rule);
this module only cuts the patches in scan order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GlimpseGrid", "glimpse_grid", "scan_positions"]


@dataclass(frozen=True)
class GlimpseGrid:
    """Patches ``(n_images, n_glimpses, patch * patch)`` and their top-left ``positions`` (row, col)."""

    patches: np.ndarray
    positions: np.ndarray


def scan_positions(height: int, width: int, patch: int, stride: int, scan: str = "raster") -> np.ndarray:
    """Top-left corners of the glimpses, in the order the eye visits them.

    ``raster`` reads rows left to right; ``snake`` alternates direction so that
    consecutive glimpses are always neighbours.
    """
    if patch > min(height, width):
        raise ValueError(f"[stimulus] patch = {patch} is larger than the images ({height} x {width})")
    rows = range(0, height - patch + 1, stride)
    cols = list(range(0, width - patch + 1, stride))
    out = []
    for i, r in enumerate(rows):
        order = cols[::-1] if (scan == "snake" and i % 2) else cols
        out += [(r, c) for c in order]
    if scan not in ("raster", "snake"):
        raise ValueError(f"unknown scan {scan!r}; known: 'raster', 'snake'")
    return np.asarray(out, dtype=np.int64)


def glimpse_grid(images: np.ndarray, patch: int, stride: int, scan: str = "raster") -> GlimpseGrid:
    """Cut every image into its glimpse sequence (a view-free copy, flattened patches)."""
    n, h, w = images.shape
    pos = scan_positions(h, w, patch, stride, scan)
    if len(pos) < 2:
        raise ValueError(f"[stimulus] patch = {patch}, stride = {stride} give {len(pos)} glimpse(s) on "
                         f"{h} x {w} images; a sequence needs at least 2")
    patches = np.stack([images[:, r:r + patch, c:c + patch].reshape(n, -1) for r, c in pos], axis=1)
    return GlimpseGrid(patches, pos)
