"""Built-in image data sets (scikit-learn, scikit-image): grey images in [0, 1], offline."""
from __future__ import annotations

import numpy as np

from . import Dataset, Source

__all__ = ["NATURAL_IMAGES", "SOURCES", "digits", "natural_images"]


def digits(**_) -> Dataset:
    """scikit-learn's 1797 hand-written digits, 8 x 8 pixels, 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset("digits", d.images / 16.0, d.target.astype(np.int64), tuple(map(str, range(10))))


#: scikit-image photographs and textures used by :func:`natural_images` (all ship with the package).
NATURAL_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon",
                  "grass", "gravel", "brick", "hubble_deep_field", "immunohistochemistry")


def natural_images(crop: int = 16, per_image: int = 150, downsample: int = 4, **_) -> Dataset:
    """Random grey crops of scikit-image's natural images; the label is the source image.

    Each photograph is converted to grey, block-averaged by ``downsample`` and
    cut into ``per_image`` crops of ``crop`` x ``crop`` pixels at random positions.
    The crops are the same for every protocol seed.
    """
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.measure import block_reduce

    rng = np.random.default_rng(0)
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


SOURCES = {
    "digits": Source(digits, "image", "scikit-learn's 8 x 8 hand-written digits (built in)"),
    "natural_images": Source(natural_images, "image",
                             "16 x 16 grey crops of 12 scikit-image photographs, label = photograph (built in)"),
}
