"""The authors' view pipelines, ``[stimulus] augment = "affine"`` and ``"simclr"`` (``neuroplastic.data.augment``).

* the deterministic cores equal PyTorch's to float64 precision (where torch is installed): the affine warp
  equals ``grid_sample(x, affine_grid(theta), align_corners=True)`` with zero padding, the resize equals
  ``interpolate(..., mode="bilinear", antialias=True)``;
* without torch, properties that pin them down: the identity and a mirror matrix, a one-pixel shift that
  lets zeros in, constants kept by the resize;
* the draws: exactly half of an ``"affine"`` batch keeps its geometry; resized crops stay inside the image
  with areas and aspect ratios in torchvision's ranges, and its fallback is the centre box; grey pixels stay
  grey under the colour jitter, which leaves grey images' channels alone and changes nothing at p = 0;
* the paper protocols use them, a tiny run trains with each, and a 'shift' key next to another pipeline is
  refused naming the file and the key, before anything is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import set_args
from test_views_colour import cifar

from neuroplastic.cli import main
from neuroplastic.data.augment import (_crop_box, affine_warp, augment, colour_jitter, random_affine, random_grey,
                                       random_resized_crop, resize_weights)
from neuroplastic.engines.prepare import prepare
from neuroplastic.errors import ProtocolError
from neuroplastic.protocol import load

ROOT = Path(__file__).resolve().parents[1]
TANG = ROOT / "protocols" / "tang_e2e_bp_quick.toml"


# -- against PyTorch -------------------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("shape", [(4, 9, 13), (3, 8, 8, 3)])
def test_the_affine_warp_is_torchs_grid_sample(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    theta = np.array([1, 0, 0, 0, 1, 0]) + (rng.random((shape[0], 6)) - 0.5) * 0.8
    theta = theta.reshape(-1, 2, 3)
    t = torch.from_numpy(x if x.ndim == 4 else x[..., None]).permute(0, 3, 1, 2)             # (n, C, h, w)
    grid = torch.nn.functional.affine_grid(torch.from_numpy(theta), list(t.shape), align_corners=True)
    ref = torch.nn.functional.grid_sample(t, grid, padding_mode="zeros", align_corners=True)
    ref = ref.permute(0, 2, 3, 1).numpy().reshape(shape)
    np.testing.assert_allclose(affine_warp(x, theta), ref, rtol=0, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("n_in, n_out", [(96, 64), (37, 64), (64, 64), (20, 7), (5, 32)])
def test_the_resize_is_torchs_antialiased_bilinear(n_in, n_out):
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(1).random((n_in, n_in + 3))
    ours = resize_weights(n_in, n_out) @ image @ resize_weights(n_in + 3, n_out).T
    ref = torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=(n_out, n_out), mode="bilinear",
                                          antialias=True, align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


# -- properties (no torch) -------------------------------------------------------------------------------

def test_the_affine_warp_keeps_mirrors_and_shifts_by_the_matrix():
    x = np.random.default_rng(2).random((2, 6, 7))
    identity = np.tile(np.array([[1.0, 0, 0], [0, 1, 0]]), (2, 1, 1))
    np.testing.assert_allclose(affine_warp(x, identity), x, atol=1e-12)
    mirror = np.tile(np.array([[-1.0, 0, 0], [0, 1, 0]]), (2, 1, 1))
    np.testing.assert_allclose(affine_warp(x, mirror), x[:, :, ::-1], atol=1e-12)
    shift = identity.copy()
    shift[:, 0, 2] = 2 / (7 - 1)                     # sample one column to the right: the image moves left
    shifted = affine_warp(x, shift)
    np.testing.assert_allclose(shifted[:, :, :-1], x[:, :, 1:], atol=1e-12)
    np.testing.assert_allclose(shifted[:, :, -1], 0, atol=1e-12)     # zeros come in from outside


def test_the_resize_keeps_constants_and_is_the_identity_at_the_same_size():
    for n_in, n_out in [(96, 64), (5, 32), (64, 64)]:
        w = resize_weights(n_in, n_out)
        np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-12)
        assert np.all(w >= 0)
    np.testing.assert_allclose(resize_weights(8, 8), np.eye(8), atol=1e-12)
    x = np.random.default_rng(12).random((3, 16, 16, 3))          # the whole image, resized: rows, then columns
    whole = random_resized_crop(x, np.random.default_rng(13), 16, scale=(1, 1), ratio=(1, 1))
    np.testing.assert_allclose(whole, x, atol=1e-12)
    half = random_resized_crop(x, np.random.default_rng(13), 8, scale=(1, 1), ratio=(1, 1))
    w = resize_weights(16, 8)
    np.testing.assert_allclose(half, np.einsum("ij,njkc,lk->nilc", w, x, w), atol=1e-12)


def test_exactly_half_of_an_affine_batch_keeps_its_geometry():
    x = np.random.default_rng(3).random((10, 12, 12))
    y = random_affine(x, np.random.default_rng(4))
    kept = [np.allclose(y[k], x[k]) or np.allclose(y[k], x[k, :, ::-1]) for k in range(len(x))]
    assert sum(kept) == 5


def test_affine_colour_views_stay_in_range_and_grey_pixels_stay_grey():
    rng = np.random.default_rng(5)
    grey = np.repeat(rng.random((6, 10, 10, 1)), 3, axis=3).astype(np.float32)
    y = random_affine(grey, rng)
    assert y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
    np.testing.assert_allclose(y[..., 0], y[..., 1], atol=1e-6)    # saturation 0 scaled is 0; the hue is moot
    coloured = rng.random((6, 10, 10, 3)).astype(np.float32)
    assert not np.allclose(random_affine(coloured, np.random.default_rng(6)), coloured)


def test_resized_crop_boxes_are_torchvisions():
    rng = np.random.default_rng(7)
    boxes = np.array([_crop_box(rng, 96, 80) for _ in range(3000)])
    top, left, h, w = boxes.T
    assert np.all((top >= 0) & (left >= 0) & (top + h <= 96) & (left + w <= 80))
    area = h * w / (96 * 80)
    assert 0.07 < area.min() and area.max() <= 1.0 and 0.45 < area.mean() < 0.6     # U(0.08, 1), some clipped
    ratio = w / h
    assert 0.7 < ratio.min() and ratio.max() < 1.4                 # 3/4 .. 4/3, rounded to whole pixels
    # an image too narrow for any allowed ratio: the centre box of the nearest ratio, after ten tries
    assert _crop_box(np.random.default_rng(8), 4, 100) == (0, 47, 4, 5)


def test_the_colour_jitter_and_grey():
    rng = np.random.default_rng(9)
    x = rng.random((8, 6, 6, 3))
    np.testing.assert_array_equal(colour_jitter(x, rng, p=0.0), x)
    grey_rgb = np.repeat(x[..., :1], 3, axis=3)
    y = colour_jitter(grey_rgb, rng, p=1.0)
    np.testing.assert_allclose(y[..., 0], y[..., 2], atol=1e-12)
    assert y.min() >= 0 and y.max() <= 1 and not np.allclose(y, grey_rgb)
    g = random_grey(x, rng, p=1.0)
    np.testing.assert_allclose(g[..., 1], 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2], atol=1e-12)
    np.testing.assert_array_equal(random_grey(x, rng, p=0.0), x)


@pytest.mark.parametrize("kind", ["affine", "simclr"])
@pytest.mark.parametrize("shape, window, out", [((5, 32, 32, 3), 0, (5, 32, 32, 3)), ((4, 96, 96), 64, (4, 64, 64))])
def test_every_pipeline_gives_views_of_the_window(kind, shape, window, out):
    x = np.random.default_rng(10).random(shape).astype(np.float32)
    y = augment(x, np.random.default_rng(11), kind=kind, window=window)
    assert y.shape == out and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1 + 1e-6
    z = augment(x, np.random.default_rng(11), kind=kind, window=window)
    np.testing.assert_array_equal(y, z)                             # the run's generator decides every draw


# -- protocols -------------------------------------------------------------------------------------------

def test_the_paper_protocols_use_the_authors_views():
    for path in sorted((ROOT / "protocols").glob("tang_*_paper.toml")):
        assert load(path).stimulus.augment == ("affine" if "cifar" in path.name else "simclr"), path.name


@pytest.mark.parametrize("kind", ["affine", "simclr"])
def test_a_run_trains_on_the_authors_views(tmp_path, kind):
    sets = cifar(tmp_path, 'model.arch="dense"', "model.layers=[8,8]", "train.epochs=1", "train.batch_size=10",
                 "rule.head=8", f'stimulus.augment="{kind}"')
    assert main(["run", str(TANG), "--out", str(tmp_path / "runs"), "--quiet", *set_args(sets)]) == 0


def test_a_shift_key_beside_another_pipeline_is_refused_before_writing(tmp_path, capsys):
    sets = cifar(tmp_path, 'stimulus.augment="simclr"', "stimulus.jitter=0.6")
    with pytest.raises(ProtocolError, match=r"\[stimulus\] jitter = 0.6 sets the 'shift' views, and \[stimulus\] "
                                            r"augment = 'simclr' draws its views with the authors' own") as err:
        prepare(load(TANG, sets))
    assert err.value.key == "stimulus.jitter"
    assert main(["run", str(TANG), "--out", str(tmp_path / "runs"), *set_args(sets)]) == 2
    assert str(TANG) in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(ProtocolError, match=r"augment = \"mixup\": must be one of 'shift', 'affine', 'simclr'"):
        load(TANG, ['stimulus.augment="mixup"'])
