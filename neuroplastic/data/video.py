"""Built-in video: clips of a shape moving across a noisy grey field.

Every clip shows one shape (square, disk, triangle or cross) entering at a random place and
moving at constant speed in one of four directions, wrapping around the frame edges. The label is
the direction of motion (``"motion"``) or the shape (``"shape"``): the motion is visible only
across frames, so it tests whether glimpses of several frames are encoded as motion.
"""
from __future__ import annotations

import numpy as np

from . import Dataset, Source

__all__ = ["DIRECTIONS", "SHAPES", "SOURCES", "moving_shapes"]

#: Row and column step (pixels per frame) of each direction of motion.
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
SHAPES = ("square", "disk", "triangle", "cross")


def _sprite(shape: str, size: int) -> np.ndarray:
    r, c = np.mgrid[:size, :size] - (size - 1) / 2
    half = size / 2
    mask = {"square": np.ones((size, size), bool),
            "disk": r ** 2 + c ** 2 <= half ** 2,
            "triangle": np.abs(c) <= (r + half) / 2,
            "cross": (np.abs(r) < size / 6 + 0.5) | (np.abs(c) < size / 6 + 0.5)}[shape]
    return mask.astype(np.float32)


def moving_shapes(label: str = "motion", seed: int = 0, per_class: int = 40, frames: int = 16,
                  side: int = 16, sprite: int = 5, speed: int = 1, fps: float = 25.0, **_) -> Dataset:
    """``per_class`` clips of every (direction, shape) pair: ``(frames, side, side)`` in [0, 1].

    The clips are the same for every protocol seed, as a recorded data set would be.
    """
    rng = np.random.default_rng(20210709)
    clips, motion, shape_of = [], [], []
    for d, (dr, dc) in enumerate(DIRECTIONS.values()):
        for s, shape in enumerate(SHAPES):
            spr = _sprite(shape, sprite)
            for _ in range(per_class):
                clip = 0.1 * rng.random((frames, side, side), dtype=np.float32)
                r0, c0 = rng.integers(0, side, 2)
                brightness = rng.uniform(0.6, 0.9)
                for f in range(frames):
                    rows = (r0 + dr * speed * f + np.arange(sprite)) % side
                    cols = (c0 + dc * speed * f + np.arange(sprite)) % side
                    clip[f][np.ix_(rows, cols)] = np.maximum(clip[f][np.ix_(rows, cols)], brightness * spr)
                clips.append(clip)
                motion.append(d)
                shape_of.append(s)
    labels, classes = (motion, tuple(DIRECTIONS)) if label == "motion" else (shape_of, SHAPES)
    return Dataset("moving_shapes", np.asarray(clips), np.asarray(labels, dtype=np.int64), classes,
                   domain="video", rate=fps)


SOURCES = {
    "moving_shapes": Source(moving_shapes, "video", "4 shapes x 4 directions x 40 clips of 16 frames, "
                            "16 x 16 pixels (built in)", labels=("motion", "shape")),
}
