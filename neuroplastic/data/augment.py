r"""Augmentations of grey image batches for two-view self-supervised learning (Tang et al. 2022).

Every function takes images ``x (n, h, w)`` in [0, 1] and an explicit
``np.random.Generator`` and returns a new array of the same shape and dtype in
[0, 1]; each image gets its own random draw. The two views of an image share
its identity and nothing else, so what the encoder must keep is what survives
these transformations: a shift by a few pixels, a change of contrast and
brightness, a little blur.

.. math::

    \text{crop:}\quad x'_{r,c} = \tilde x_{r + i,\; c + j},\quad
        \tilde x = x \text{ zero-padded by } p,\quad i, j \sim U\{0, \dots, 2p\}

    \text{jitter:}\quad x' = \mathrm{clip}\big(c\,(b\,x - \overline{b\,x}) + \overline{b\,x},\ 0, 1\big),\quad
        b, c \sim U[1 - s, 1 + s]

    \text{blur:}\quad x' = G_\sigma * x,\quad \sigma \sim U[0, \sigma_{max}]

Digits are not flipped by default: a mirrored 2, 3 or 7 is no longer that digit.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import SettingError

__all__ = ["random_crop", "random_flip", "jitter", "blur", "augment", "check_views", "two_views"]


def check_views(shape, crop_pad, blur) -> None:
    """Refuse view settings that do not fit images of ``shape``, naming the protocol key.

    ``shape`` is an image's ``(h, w)`` (or a batch's ``(n, h, w)``: the last two sizes count).
    ``stimulus.crop_pad`` may be 0 up to the smaller side (a shift by more shows only padding);
    ``stimulus.blur`` (the largest standard deviation, pixels) 0 up to the smaller side (a wider blur
    leaves a flat image, and its filter would be larger than the image). Raises :class:`SettingError`.
    """
    h, w = (int(k) for k in tuple(shape)[-2:])
    side = min(h, w)
    if isinstance(crop_pad, bool) or not isinstance(crop_pad, (int, np.integer)) or not 0 <= crop_pad <= side:
        raise SettingError("stimulus.crop_pad", f"[stimulus] crop_pad = {crop_pad!r} does not fit {h} x {w} images: "
                           f"expected an integer shift 0..{side} (pixels, at most the image side)")
    try:
        ok = not isinstance(blur, bool) and math.isfinite(blur) and 0 <= blur <= side
    except TypeError:
        ok = False
    if not ok:
        raise SettingError("stimulus.blur", f"[stimulus] blur = {blur!r} does not fit {h} x {w} images: expected a "
                           f"standard deviation 0..{side} (pixels, at most the image side)")


def random_crop(x: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    """Shift each image by up to ``pad`` pixels in each direction (pad with 0, crop back to size)."""
    if pad <= 0:
        return x.copy()
    n, h, w = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    i = rng.integers(0, 2 * pad + 1, size=n)
    j = rng.integers(0, 2 * pad + 1, size=n)
    rows = i[:, None] + np.arange(h)                      # (n, h) rows of the padded image to keep
    cols = j[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``."""
    flip = rng.random(len(x)) < p
    return np.where(flip[:, None, None], x[:, :, ::-1], x)


def jitter(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Scale brightness and contrast by factors drawn from ``[1 - strength, 1 + strength]``, clip to [0, 1]."""
    if strength <= 0:
        return x.copy()
    n = len(x)
    b = rng.uniform(1 - strength, 1 + strength, size=n).astype(x.dtype)[:, None, None]
    c = rng.uniform(1 - strength, 1 + strength, size=n).astype(x.dtype)[:, None, None]
    y = b * x
    mean = y.mean(axis=(1, 2), keepdims=True)            # contrast is scaled about the image's mean grey
    return np.clip(c * (y - mean) + mean, 0.0, 1.0).astype(x.dtype, copy=False)


def blur(x: np.ndarray, rng: np.random.Generator, max_sigma: float) -> np.ndarray:
    """Gaussian blur of each image with a standard deviation drawn from ``[0, max_sigma]`` pixels."""
    if max_sigma <= 0:
        return x.copy()
    sigma = rng.uniform(0.0, max_sigma, size=len(x))
    out = np.empty_like(x)
    for k, (im, s) in enumerate(zip(x, sigma)):          # 'nearest' keeps a blurred edge from darkening
        out[k] = gaussian_filter(im, s, mode="nearest", truncate=3.0)
    return out


def augment(x: np.ndarray, rng: np.random.Generator, *, crop_pad: int = 1, flip: bool = False,
            jitter_strength: float = 0.4, blur_sigma: float = 0.0) -> np.ndarray:
    """One random view of each image: crop, (flip), brightness/contrast jitter, blur, in that order."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"augmentations take grey image batches (n, h, w); got shape {x.shape}")
    check_views(x.shape, crop_pad, blur_sigma)
    y = random_crop(x, rng, crop_pad)
    if flip:
        y = random_flip(y, rng)
    y = jitter(y, rng, jitter_strength)
    return blur(y, rng, blur_sigma)


def two_views(images: np.ndarray, rng: np.random.Generator, **settings) -> tuple[np.ndarray, np.ndarray]:
    """Two independent views of every image (keywords as :func:`augment`): the positive pairs."""
    return augment(images, rng, **settings), augment(images, rng, **settings)
