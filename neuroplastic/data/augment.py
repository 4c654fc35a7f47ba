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

These are the ``"shift"`` views (``[stimulus] augment``). Two more pipelines are the authors' own
(Tang et al.'s code), with their fixed parameters:

- ``"affine"`` (their ``deform_data``, used on CIFAR): a random half of the batch is warped by a random
  affine map :math:`\theta = [I\,|\,0] + u`, the six entries of :math:`u \sim U(-0.25, 0.25)` and its
  translation doubled, in coordinates where the image spans [-1, 1], sampled bilinearly with zeros
  outside (PyTorch's ``affine_grid`` and ``grid_sample`` with ``align_corners=True``); colour images
  then get their saturation scaled by :math:`2^{U(-2, 2)}` (clipped to 1) and their hue turned by
  :math:`U(-0.1, 0.1)` of a circle; every image is mirrored with probability 1/2.
- ``"simclr"`` (the SimCLR pipeline of their STL-10 runs): a random resized crop (area 8-100 % of the
  image, aspect ratio 3/4-4/3, resized bilinearly with antialiasing to the view's side), a mirror with
  probability 1/2, with probability 0.8 a colour jitter (brightness, contrast and saturation factors from
  [0.2, 1.8], a hue turn from [-0.2, 0.2], applied in a random order, as torchvision's ``ColorJitter``),
  and with probability 0.2 grey (0.299 R + 0.587 G + 0.114 B in every channel).
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from scipy.ndimage import gaussian_filter

from ..errors import SettingError
from .mapped import LUMA

__all__ = ["AUGMENTATIONS", "random_crop", "random_window", "random_flip", "jitter", "blur", "augment", "check_views",
           "two_views", "resize_weights", "random_resized_crop", "affine_warp", "random_affine", "colour_jitter",
           "random_grey"]

#: The view pipelines ``[stimulus] augment`` may name (module docstring).
AUGMENTATIONS = ("shift", "affine", "simclr")


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


def augment(x: np.ndarray, rng: np.random.Generator, *, kind: str = "shift", crop_pad: int = 1, flip: bool = False,
            jitter_strength: float = 0.4, blur_sigma: float = 0.0, window: int = 0) -> np.ndarray:
    """One random view of each image, by the pipeline ``kind`` (:data:`AUGMENTATIONS`).

    ``"shift"``: (a ``window`` x ``window`` part,) crop, (flip), jitter, blur, in that order. ``window`` > 0
    first keeps a window of that side at a random place of each image (the authors' 64 x 64 crops of
    STL-10's 96 x 96 images); the probe sees the centre window (:func:`random_window`).
    ``"affine"``: (the window,) :func:`random_affine`. ``"simclr"``: :func:`random_resized_crop` to the
    window's side (the image's, if 0), mirror, :func:`colour_jitter`, :func:`random_grey`. The other
    keywords belong to ``"shift"``.
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"augmentations take batches of grey images (n, h, w) or of colour images (n, h, w, C), "
                         f"channels last; got shape {x.shape}")
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment kind {kind!r}; allowed: {', '.join(AUGMENTATIONS)}")
    if kind == "simclr":
        y = random_resized_crop(x, rng, window or min(x.shape[1:3]))
        return random_grey(colour_jitter(random_flip(y, rng), rng), rng)
    if window:
        x = random_window(x, rng, window)
    if kind == "affine":
        return random_affine(x, rng)
    check_views(x.shape[1:3], crop_pad, blur_sigma)
    y = random_crop(x, rng, crop_pad)
    if flip:
        y = random_flip(y, rng)
    y = jitter(y, rng, jitter_strength)
    return blur(y, rng, blur_sigma)


# -- the authors' pipelines ------------------------------------------------------------------------------

def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of bilinear resizing with antialiasing along one axis (PIL's and PyTorch's
    ``interpolate(..., mode="bilinear", antialias=True)``): a triangle filter widened by the
    downscaling factor, centred on each output pixel, normalised to sum 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale                       # output pixel centres, in input pixels
    src = np.arange(n_in) + 0.5
    w = np.clip(1 - np.abs(src[None, :] - centre[:, None]) / support, 0, None)
    # PIL and PyTorch only visit the input pixels within the filter's support, rounded to whole pixels
    lo = np.maximum((centre - support + 0.5).astype(int), 0)
    hi = np.minimum((centre + support + 0.5).astype(int), n_in)
    idx = np.arange(n_in)[None, :]
    w = np.where((idx >= lo[:, None]) & (idx < hi[:, None]), w, 0.0)
    return w / w.sum(axis=1, keepdims=True)


def _crop_box(rng: np.random.Generator, h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's ``RandomResizedCrop.get_params``: ten tries at a box of random area and aspect ratio,
    then the centre box of the nearest allowed ratio."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    if w / h < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif w / h > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(x: np.ndarray, rng: np.random.Generator, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """A box of each image of random area (``scale`` of the image) and aspect ratio, resized to ``size`` x ``size``
    (bilinear, antialiased): torchvision's ``RandomResizedCrop(size)``."""
    n, h, w = x.shape[:3]
    out = np.empty((n, size, size, *x.shape[3:]), dtype=x.dtype)
    for k in range(n):
        top, left, ch, cw = _crop_box(rng, h, w, scale, ratio)
        box = x[k, top:top + ch, left:left + cw]
        rows = np.tensordot(resize_weights(ch, size), box, axes=(1, 0))                # (size, cw, ...)
        out[k] = np.moveaxis(np.tensordot(resize_weights(cw, size), rows, axes=(1, 1)), 0, 1)
    return out


def affine_warp(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Each image resampled at ``theta[k] @ (c, r, 1)`` (``theta`` (n, 2, 3); c, r the pixel's column and row in
    [-1, 1], corner pixels at +-1), bilinear, zero outside: PyTorch's ``grid_sample(x, affine_grid(theta))``
    with ``align_corners=True``."""
    n, h, w = x.shape[:3]
    c, r = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))              # (h, w) each
    base = np.stack([c, r, np.ones_like(c)], axis=-1)                               # (h, w, 3)
    grid = np.einsum("kij,hwj->khwi", np.asarray(theta, dtype=np.float64), base)    # (n, h, w, 2): x, y
    col, row = (grid[..., 0] + 1) / 2 * (w - 1), (grid[..., 1] + 1) / 2 * (h - 1)
    c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
    out = np.zeros(x.shape, dtype=np.float64)
    k = np.arange(n)[:, None, None]
    for dr in (0, 1):
        for dc in (0, 1):
            rr, cc = r0 + dr, c0 + dc
            weight = (1 - np.abs(row - rr)) * (1 - np.abs(col - cc))
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            value = x[k, np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]
            out += _per_pixel(weight * inside, x) * value
    return out.astype(x.dtype, copy=False)


def _per_pixel(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` values shaped to broadcast over ``x``'s channels, if it has any."""
    return values if x.ndim == 3 else values[..., None]


def random_affine(x: np.ndarray, rng: np.random.Generator, perturb: float = 0.5, saturation: float = 4.0,
                  hue: float = 0.2) -> np.ndarray:
    """The authors' ``deform_data(x, perturb, ['aff'], saturation, hue, embedd=False)``: a random half of the batch
    warped by ``I + u`` (:func:`affine_warp`; ``u`` uniform in ``+-perturb/2``, its translation doubled), colour
    images' saturation scaled by ``2^U(-saturation/2, saturation/2)`` and hue turned by ``U(-hue/2, hue/2)``,
    then every image mirrored with probability 1/2."""
    n = len(x)
    u = (rng.random((n, 6)) - 0.5) * perturb
    u[rng.permutation(n)[n // 2:]] = 0                     # the other half keeps its geometry
    u[:, [2, 5]] *= 2                                      # the shift part, amplified as theirs
    theta = (u + np.array([1, 0, 0, 0, 1, 0])).reshape(n, 2, 3)
    y = affine_warp(x, theta)
    if x.ndim == 4 and x.shape[3] == 3 and saturation > 0:
        v = rng.random((n, 2))
        hsv = rgb_to_hsv(np.clip(y, 0, 1))
        hsv[..., 1] = np.clip(hsv[..., 1] * _per_image(2.0 ** (v[:, 0] * saturation - saturation / 2), hsv[..., 1]),
                              0, 1)
        hsv[..., 0] = np.mod(hsv[..., 0] + _per_image((v[:, 1] - 0.5) * hue, hsv[..., 0]), 1.0)
        y = hsv_to_rgb(hsv).astype(x.dtype, copy=False)
    return random_flip(y, rng)


def _grey(x: np.ndarray) -> np.ndarray:
    """The luma of colour images (:data:`~neuroplastic.data.mapped.LUMA`, as PIL and torchvision), one channel."""
    r, g, b = (float(w) for w in LUMA)                  # Python floats keep x's dtype
    return x[..., :1] * r + x[..., 1:2] * g + x[..., 2:3] * b


def colour_jitter(x: np.ndarray, rng: np.random.Generator, strength: float = 0.8, hue: float = 0.2,
                  p: float = 0.8) -> np.ndarray:
    """With probability ``p`` per image, torchvision's ``ColorJitter(strength, strength, strength, hue)``:
    brightness ``b x``, contrast ``c x + (1 - c) mean(grey x)``, saturation ``s x + (1 - s) grey x`` (each clipped
    to [0, 1], factors from ``[max(0, 1 - strength), 1 + strength]``) and a hue turn from ``[-hue, hue]``, in a
    random order per image. Grey images get brightness and contrast only (their grey is themselves)."""
    y = x.astype(np.float64, copy=True)
    colour = x.ndim == 4 and x.shape[3] == 3
    low = max(0.0, 1 - strength)
    for k in np.flatnonzero(rng.random(len(x)) < p):
        order = rng.permutation(4)
        b, c, s = rng.uniform(low, 1 + strength, size=3)
        h = rng.uniform(-hue, hue)
        im = y[k]
        for op in order:
            if op == 0:
                im = np.clip(b * im, 0, 1)
            elif op == 1:
                mean = (_grey(im) if colour else im).mean()
                im = np.clip(c * im + (1 - c) * mean, 0, 1)
            elif op == 2 and colour:
                im = np.clip(s * im + (1 - s) * _grey(im), 0, 1)
            elif op == 3 and colour:
                hsv = rgb_to_hsv(im)
                hsv[..., 0] = np.mod(hsv[..., 0] + h, 1.0)
                im = hsv_to_rgb(hsv)
        y[k] = im
    return y.astype(x.dtype, copy=False)


def random_grey(x: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
    """With probability ``p`` per image, its luma in every channel (torchvision's ``RandomGrayscale``); grey
    images are left as they are."""
    pick = rng.random(len(x)) < p
    if not (x.ndim == 4 and x.shape[3] == 3):
        return x.copy()
    return np.where(_per_image(pick, x), np.broadcast_to(_grey(x), x.shape), x).astype(x.dtype, copy=False)


def two_views(images: np.ndarray, rng: np.random.Generator, **settings) -> tuple[np.ndarray, np.ndarray]:
    """Two independent views of every image (keywords as :func:`augment`): the positive pairs."""
    return augment(images, rng, **settings), augment(images, rng, **settings)
