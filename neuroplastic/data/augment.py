r"""Augmentations of image batches for two-view self-supervised learning (Tang et al. 2022).

Every function takes grey images ``x (n, h, w)`` or colour images ``(n, h, w, C)``
(channels last) in [0, 1] and an explicit ``np.random.Generator`` and returns a new
array of the same shape and dtype in [0, 1]; each image gets its own random draw, shared
by its channels (one shift, one mirror, one brightness and contrast factor, one blur
width), so a view never shifts one colour against another. Grey batches draw and
compute exactly what they did before colour was added. The two views of an image share
its identity and nothing else, so what the encoder must keep is what survives
these transformations: a shift by a few pixels, a change of contrast and
brightness, a little blur.

.. math::

    \text{crop:}\quad x'_{r,c} = \tilde x_{r + i,\; c + j},\quad
        \tilde x = x \text{ zero-padded by } p,\quad i, j \sim U\{0, \dots, 2p\}

    \text{jitter:}\quad x' = \mathrm{clip}\big(c\,(b\,x - \overline{b\,x}) + \overline{b\,x},\ 0, 1\big),\quad
        b, c \sim U[1 - s, 1 + s]

    \text{blur:}\quad x' = G_\sigma * x,\quad \sigma \sim U[0, \sigma_{max}]\ \text{(each channel alike)}

where :math:`\overline{b\,x}` is the mean over the image's pixels and channels, one number per image.
Digits are not flipped by default: a mirrored 2, 3 or 7 is no longer that digit.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import SettingError

__all__ = ["random_crop", "random_window", "random_flip", "jitter", "blur", "augment", "check_views", "two_views"]


def check_views(shape, crop_pad, blur) -> None:
    """Refuse view settings that do not fit images of ``shape``, naming the protocol key.

    ``shape`` is an image's ``(h, w)`` (or a grey batch's ``(n, h, w)``: the last two sizes count; of
    colour images, pass their ``(h, w)``).
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
    n, h, w = x.shape[:3]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 3))
    i = rng.integers(0, 2 * pad + 1, size=n)
    j = rng.integers(0, 2 * pad + 1, size=n)
    rows = i[:, None] + np.arange(h)                      # (n, h) rows of the padded image to keep
    cols = j[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_window(x: np.ndarray, rng: np.random.Generator | None, side: int) -> np.ndarray:
    """A ``side x side`` window of each image: at a random place (``rng``; a view), or at the centre (``None``; the probe)."""
    n, h, w = x.shape[:3]
    if rng is None:
        tops, lefts = np.full(n, (h - side) // 2), np.full(n, (w - side) // 2)
    else:
        tops, lefts = rng.integers(0, h - side + 1, size=n), rng.integers(0, w - side + 1, size=n)
    rows = tops[:, None] + np.arange(side)
    cols = lefts[:, None] + np.arange(side)
    return x[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``."""
    flip = rng.random(len(x)) < p
    return np.where(_per_image(flip, x), x[:, :, ::-1], x)


def jitter(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Scale brightness and contrast by factors drawn from ``[1 - strength, 1 + strength]``, clip to [0, 1]."""
    if strength <= 0:
        return x.copy()
    n = len(x)
    b = _per_image(rng.uniform(1 - strength, 1 + strength, size=n).astype(x.dtype), x)
    c = _per_image(rng.uniform(1 - strength, 1 + strength, size=n).astype(x.dtype), x)
    y = b * x
    # contrast is scaled about the image's mean level (over its pixels and channels): one factor and one
    # centre for every channel, so colours shift together and an image with equal channels stays grey
    mean = y.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
    return np.clip(c * (y - mean) + mean, 0.0, 1.0).astype(x.dtype, copy=False)


def _per_image(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One value per image, shaped to broadcast over the rest of ``x`` (rows, columns and any channels)."""
    return values.reshape(len(values), *(1,) * (x.ndim - 1))


def blur(x: np.ndarray, rng: np.random.Generator, max_sigma: float) -> np.ndarray:
    """Gaussian blur of each image with a standard deviation drawn from ``[0, max_sigma]`` pixels."""
    if max_sigma <= 0:
        return x.copy()
    sigma = rng.uniform(0.0, max_sigma, size=len(x))
    out = np.empty_like(x)
    for k, (im, s) in enumerate(zip(x, sigma)):          # 'nearest' keeps a blurred edge from darkening
        width = s if x.ndim == 3 else (s, s) + (0.0,) * (x.ndim - 3)     # 0: channels are not mixed
        out[k] = gaussian_filter(im, width, mode="nearest", truncate=3.0)
    return out


def augment(x: np.ndarray, rng: np.random.Generator, *, crop_pad: int = 1, flip: bool = False,
            jitter_strength: float = 0.4, blur_sigma: float = 0.0, window: int = 0) -> np.ndarray:
    """One random view of each image: (a ``window`` x ``window`` part,) crop, (flip), jitter, blur, in that order.

    ``window`` > 0 first keeps a window of that side at a random place of each image (the authors'
    64 x 64 crops of STL-10's 96 x 96 images); the probe sees the centre window (:func:`random_window`).
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"augmentations take batches of grey images (n, h, w) or of colour images (n, h, w, C), "
                         f"channels last; got shape {x.shape}")
    if window:
        x = random_window(x, rng, window)
    check_views(x.shape[1:3], crop_pad, blur_sigma)
    y = random_crop(x, rng, crop_pad)
    if flip:
        y = random_flip(y, rng)
    y = jitter(y, rng, jitter_strength)
    return blur(y, rng, blur_sigma)


def two_views(images: np.ndarray, rng: np.random.Generator, **settings) -> tuple[np.ndarray, np.ndarray]:
    """Two independent views of every image (keywords as :func:`augment`): the positive pairs."""
    return augment(images, rng, **settings), augment(images, rng, **settings)
