"""Glimpse sequences from images: the eye scans a grid of patches.

Consecutive glimpses of one image are *fixations* (y = +1); a jump to the
glimpse at the same position of another image is a *saccade* (y = -1). Which
steps are saccades is decided by the training loop (it depends on the rule);
this module only cuts the patches in scan order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GlimpseGrid", "SaccadeStream", "glimpse_grid", "saccade_stream", "scan_positions"]


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
    if scan not in ("raster", "snake"):
        raise ValueError(f"unknown scan {scan!r}; known: 'raster', 'snake'")
    if patch > min(height, width):
        raise ValueError(f"[stimulus] patch = {patch} is larger than the images ({height} x {width})")
    rows = range(0, height - patch + 1, stride)
    cols = list(range(0, width - patch + 1, stride))
    out = []
    for i, r in enumerate(rows):
        order = cols[::-1] if (scan == "snake" and i % 2) else cols
        out += [(r, c) for c in order]
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


@dataclass(frozen=True)
class SaccadeStream:
    """One eye's path over a set of images: at step k it looks at glimpse ``position[k]`` of ``image[k]``.

    ``y[k]`` is +1 for a fixation (same image as step k - 1), -1 for a saccade
    (another image, same scan position) and 0 at the first step, which has no
    context and so no update.
    """

    image: np.ndarray
    position: np.ndarray
    y: np.ndarray

    def glimpses(self, patches: np.ndarray) -> np.ndarray:
        """The stream's inputs (length, n_in) from a glimpse grid's ``patches`` (n_images, T, n_in)."""
        return patches[self.image, self.position]


def saccade_stream(images: np.ndarray, n_positions: int, length: int, saccade_prob: float,
                   rng: np.random.Generator) -> SaccadeStream:
    """A continuous glimpse stream for online learning (the Brian2 engine and its numpy reference).

    The eye scans positions 0, 1, ..., n_positions - 1, 0, ... ; at every step it
    stays on its image (fixation) or, with probability ``saccade_prob``, jumps to
    the same position of another image drawn from ``images`` (saccade).
    """
    images = np.asarray(images)
    if len(images) < 2:
        raise ValueError("a saccade stream needs at least 2 images")
    image = np.empty(length, dtype=np.int64)
    y = np.ones(length)
    y[0] = 0.0
    saccade = rng.random(length) < saccade_prob
    jump = rng.integers(1, len(images), size=length)      # offset to another image, never itself
    k = rng.integers(len(images))
    image[0] = images[k]
    for step in range(1, length):
        if saccade[step]:
            k = (k + jump[step]) % len(images)
            y[step] = -1.0
        image[step] = images[k]
    return SaccadeStream(image, np.arange(length) % n_positions, y)
