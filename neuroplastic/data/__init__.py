"""Data sets: built-in ones that work offline, chosen by ``[data] source``.

Every loader returns a :class:`Dataset` of grey images in [0, 1] with integer
labels (the labels are used only by the linear probe, never by learning).
Loaders know no engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DATASETS", "Dataset", "load"]


@dataclass(frozen=True)
class Dataset:
    """Images (n, height, width) in [0, 1], labels (n,), and the class names."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def digits() -> Dataset:
    """scikit-learn's 1797 hand-written digits, 8 x 8 pixels, 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset("digits", d.images / 16.0, d.target.astype(np.int64), tuple(map(str, range(10))))


#: scikit-image photographs and textures used by :func:`natural_images` (all ship with the package).
NATURAL_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon",
                  "grass", "gravel", "brick", "hubble_deep_field", "immunohistochemistry")


def natural_images(crop: int = 16, per_image: int = 150, downsample: int = 4, seed: int = 0) -> Dataset:
    """Random grey crops of scikit-image's natural images; the label is the source image.

    Each photograph is converted to grey, block-averaged by ``downsample`` and
    cut into ``per_image`` crops of ``crop`` x ``crop`` pixels at random positions.
    """
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.measure import block_reduce

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, name in enumerate(NATURAL_IMAGES):
        im = getattr(skimage.data, name)()
        im = rgb2gray(im[..., :3]) if im.ndim == 3 else im / 255.0
        im = block_reduce(im, (downsample, downsample), np.mean)
        ys = rng.integers(0, im.shape[0] - crop + 1, per_image)
        xs = rng.integers(0, im.shape[1] - crop + 1, per_image)
        images += [im[y:y + crop, x:x + crop] for y, x in zip(ys, xs)]
        labels += [k] * per_image
    return Dataset("natural_images", np.asarray(images), np.asarray(labels, dtype=np.int64), NATURAL_IMAGES)


DATASETS = {"digits": digits, "natural_images": natural_images}


def load(source: str, max_samples: int = 0, seed: int = 0) -> Dataset:
    """Load the data set named ``source``; ``max_samples > 0`` keeps a stratified-random subset."""
    try:
        ds = DATASETS[source]()
    except KeyError:
        raise ValueError(f"unknown data source {source!r}; known: {', '.join(sorted(DATASETS))}") from None
    if max_samples and max_samples < len(ds):
        keep = np.sort(np.random.default_rng(seed).permutation(len(ds))[:max_samples])
        ds = Dataset(ds.name, ds.images[keep], ds.labels[keep], ds.classes)
    return ds
