"""Two-view augmentations of grey and colour image batches (``neuroplastic.data.augment``).

* grey batches ``(n, h, w)`` get exactly the views they got before colour existed (a reference copy of
  that code is kept here);
* colour batches ``(n, h, w, C)``: every channel of an image is shifted, mirrored and blurred alike (each
  channel, augmented as a grey batch from the same generator, gives the same values), and the jitter
  applies one brightness and one contrast factor to all channels.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from neuroplastic.data.augment import augment, blur, jitter, random_crop, random_flip, two_views
from neuroplastic.errors import SettingError

SETTINGS = dict(crop_pad=3, flip=True, jitter_strength=0.4, blur_sigma=1.5)


# -- the grey augmentations as they were written for (n, h, w) batches only: the reference ----------------

def _old_crop(x, rng, pad):
    if pad <= 0:
        return x.copy()
    n, h, w = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    i = rng.integers(0, 2 * pad + 1, size=n)
    j = rng.integers(0, 2 * pad + 1, size=n)
    rows = i[:, None] + np.arange(h)
    cols = j[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _old_flip(x, rng, p=0.5):
    flip = rng.random(len(x)) < p
    return np.where(flip[:, None, None], x[:, :, ::-1], x)


def _old_jitter(x, rng, strength):
    if strength <= 0:
        return x.copy()
    n = len(x)
    b = rng.uniform(1 - strength, 1 + strength, size=n).astype(x.dtype)[:, None, None]
    c = rng.uniform(1 - strength, 1 + strength, size=n).astype(x.dtype)[:, None, None]
    y = b * x
    mean = y.mean(axis=(1, 2), keepdims=True)
    return np.clip(c * (y - mean) + mean, 0.0, 1.0).astype(x.dtype, copy=False)


def _old_blur(x, rng, max_sigma):
    if max_sigma <= 0:
        return x.copy()
    sigma = rng.uniform(0.0, max_sigma, size=len(x))
    out = np.empty_like(x)
    for k, (im, s) in enumerate(zip(x, sigma)):
        out[k] = gaussian_filter(im, s, mode="nearest", truncate=3.0)
    return out


def _old_augment(x, rng, crop_pad, flip, jitter_strength, blur_sigma):
    y = _old_crop(x, rng, crop_pad)
    if flip:
        y = _old_flip(y, rng)
    return _old_blur(_old_jitter(y, rng, jitter_strength), rng, blur_sigma)


@pytest.mark.parametrize("settings", [SETTINGS, dict(crop_pad=0, flip=False, jitter_strength=0.0, blur_sigma=0.0),
                                      dict(crop_pad=1, flip=False, jitter_strength=0.4, blur_sigma=0.0)])
def test_grey_views_are_bit_identical_to_the_grey_only_code(settings):
    x = np.random.default_rng(5).random((7, 12, 10)).astype(np.float32)
    rng, ref = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(2):                                  # two views, one generator, as two_views draws them
        view = augment(x, rng, **settings)
        assert view.dtype == np.float32 and np.array_equal(view, _old_augment(x, ref, **settings))
    assert rng.random() == ref.random(), "the same number of draws"


# -- colour ----------------------------------------------------------------------------------------------

def rgb_batch(n=5, h=9, w=11, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


def test_every_channel_is_shifted_mirrored_and_blurred_alike():
    """Each channel of a colour view is the grey view of that channel drawn from the same generator."""
    x = rgb_batch()
    settings = dict(SETTINGS, jitter_strength=0.0)      # crop, flip and blur: channel by channel the same
    view = augment(x, np.random.default_rng(3), **settings)
    assert view.shape == x.shape and view.dtype == x.dtype
    for c in range(3):
        grey = augment(np.ascontiguousarray(x[..., c]), np.random.default_rng(3), **settings)
        np.testing.assert_array_equal(view[..., c], grey)
    for op, arg in ((random_crop, 2), (random_flip, 0.5), (blur, 2.0)):
        out = op(x, np.random.default_rng(4), arg)
        for c in range(3):
            grey = op(np.ascontiguousarray(x[..., c]), np.random.default_rng(4), arg)
            np.testing.assert_array_equal(out[..., c], grey)


def test_a_dot_moves_and_mirrors_with_all_its_channels():
    x = np.zeros((6, 8, 8, 3), np.float32)
    x[:, 3, 4] = [1.0, 0.5, 0.25]                       # one coloured dot
    c = random_crop(x, np.random.default_rng(0), 2)
    for im in c:
        (r,), (col,) = np.nonzero(im[..., 0])
        assert abs(r - 3) <= 2 and abs(col - 4) <= 2
        np.testing.assert_array_equal(im[r, col], [1.0, 0.5, 0.25])      # the same place in every channel
        assert np.count_nonzero(im) == 3
    f = random_flip(x, np.random.default_rng(1), p=1.0)
    np.testing.assert_array_equal(f, x[:, :, ::-1])
    b = blur(x, np.random.default_rng(2), 2.0)
    np.testing.assert_allclose(b[..., 1], 0.5 * b[..., 0], rtol=1e-6)  # channels are not mixed
    np.testing.assert_allclose(b[..., 2], 0.25 * b[..., 0], rtol=1e-6)


def test_jitter_applies_one_brightness_and_contrast_to_all_channels():
    x = (0.4 + 0.2 * rgb_batch()).astype(np.float32)   # in [0.4, 0.6]: a jitter of 0.2 never clips
    rng = np.random.default_rng(6)
    j = jitter(x, rng, 0.2)
    draws = np.random.default_rng(6)
    b = draws.uniform(0.8, 1.2, len(x)).astype(np.float32)
    c = draws.uniform(0.8, 1.2, len(x)).astype(np.float32)
    # channel differences scale by b c, the same factor for every pixel and channel of an image
    for k in range(len(x)):
        for p, q in ((0, 1), (1, 2)):
            np.testing.assert_allclose(j[k, ..., p] - j[k, ..., q], b[k] * c[k] * (x[k, ..., p] - x[k, ..., q]),
                                       atol=1e-5)
        mean = (b[k] * x[k]).mean()                     # contrast about the mean over pixels and channels
        np.testing.assert_allclose(j[k], c[k] * (b[k] * x[k] - mean) + mean, atol=1e-6)
    # an image whose channels are equal stays grey, and gets the grey jitter of that image
    g = x[..., 0]
    same = jitter(np.repeat(g[..., None], 3, axis=-1), np.random.default_rng(7), 0.5)
    np.testing.assert_array_equal(same[..., 0], same[..., 2])
    np.testing.assert_allclose(same[..., 1], jitter(g, np.random.default_rng(7), 0.5), atol=1e-6)


def test_colour_views_keep_shape_dtype_range_and_are_deterministic():
    x = rgb_batch(n=8)
    a1, a2 = two_views(x, np.random.default_rng(7), **SETTINGS)
    b1, b2 = two_views(x, np.random.default_rng(7), **SETTINGS)
    for v in (a1, a2):
        assert v.shape == x.shape and v.dtype == x.dtype and 0 <= v.min() and v.max() <= 1
    assert np.array_equal(a1, b1) and np.array_equal(a2, b2) and not np.allclose(a1, a2)
    assert np.array_equal(augment(x, np.random.default_rng(0), crop_pad=0, jitter_strength=0.0), x)


def test_view_settings_are_checked_against_the_rows_and_columns_of_colour_images():
    x = rgb_batch(n=2, h=8, w=10)
    assert augment(x, np.random.default_rng(0), crop_pad=5, blur_sigma=4.0).shape == x.shape   # 5 > 3 channels
    with pytest.raises(SettingError, match=r"crop_pad = 9 does not fit 8 x 10 images") as err:
        augment(x, np.random.default_rng(0), crop_pad=9)
    assert err.value.key == "stimulus.crop_pad"
    for bad in (np.zeros((2, 8)), np.zeros((2, 8, 8, 3, 1))):
        with pytest.raises(ValueError, match=r"\(n, h, w\) or of colour images \(n, h, w, C\)"):
            augment(bad, np.random.default_rng(0))
