"""STL-10 (Coates, Lee & Ng 2011) in its published binary format, read lazily from disk.

``stl10_binary/`` holds ``{train,test,unlabeled}_X.bin``, ``{train,test}_y.bin`` and
``class_names.txt``. Each image is 3 x 96 x 96 uint8 = 27648 bytes: the three colour planes one
after the other, each plane written column by column (MATLAB order), so a record read as
``(3, 96, 96)`` is indexed ``[channel, column, row]``. Labels are one uint8 per image, 1..10.

The 100000 unlabeled images (2.76 GB) are what the self-supervised rules learn from; their
labels are -1. Samples are a :class:`~neuroplastic.data.mapped.RecordFile`: grey 96 x 96 float32
in [0, 1] or, with ``colour="rgb"``, 96 x 96 x 3 (rows, columns, channels), read from the file only
when indexed, so memory stays flat (see ``mapped``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import COLOURS, Dataset, DataError, Source, _os_reason, check_file, read_text
from .mapped import RecordFile, grey, record_count, rgb

__all__ = ["RECORD", "SOURCES", "SPLITS", "load", "stl10_dir"]

SIDE = 96
RECORD = (3, SIDE, SIDE)            # channel, column, row
RECORD_BYTES = 3 * SIDE * SIDE      # 27648
SPLITS = ("train", "test", "unlabeled")
LAYOUT = f"STL-10 images of 3 x {SIDE} x {SIDE} = {RECORD_BYTES} bytes each"
FILES = "train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, class_names.txt"


def grey_images(raw: np.ndarray) -> np.ndarray:
    """Grey ``(k, rows, cols)`` images from raw ``(k, channel, column, row)`` records."""
    return np.ascontiguousarray(grey(raw, axis=1).transpose(0, 2, 1))


def rgb_images(raw: np.ndarray) -> np.ndarray:
    """Colour ``(k, rows, cols, 3)`` images from raw ``(k, channel, column, row)`` records."""
    return rgb(raw.transpose(0, 3, 2, 1))


def stl10_dir(path) -> Path:
    """The ``stl10_binary`` directory: ``path`` itself or its child of that name."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(p, "directory not found (expected the STL-10 'stl10_binary' directory or its parent)")
    if (p / "stl10_binary").is_dir():
        return p / "stl10_binary"
    if (p / "class_names.txt").exists() or any((p / f"{s}_X.bin").exists() for s in SPLITS):
        return p
    raise DataError(p, f"no STL-10 data here: expected a 'stl10_binary' directory (or to be one) holding {FILES}")


def _class_names(path: Path) -> tuple[str, ...]:
    text = read_text(path, "the 10 STL-10 class names, one per line")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 10:
        raise DataError(path, f"{len(names)} class names, expected 10 (one per line)")
    return names


def _labels(path: Path, n_classes: int) -> np.ndarray:
    expected = "one uint8 label 1..10 per image"
    check_file(path, expected)
    try:
        y = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    except OSError as err:
        raise DataError(path, f"cannot read: {_os_reason(err)} (expected {expected})") from None
    bad = (y < 1) | (y > n_classes)
    if len(y) == 0 or bad.any():
        what = "is empty" if len(y) == 0 else f"has label {y[bad][0]} at position {np.flatnonzero(bad)[0]}"
        raise DataError(path, f"{what}; expected one uint8 label 1..{n_classes} per image")
    return y - 1


def load(path, split: str = "train", label: str = "class", seed: int = 0, colour: str = "grey", **_) -> Dataset:
    """STL-10 ``split`` from ``path`` (``stl10_binary`` or its parent): grey 96 x 96 images or, ``colour="rgb"``,
    96 x 96 x 3, lazily."""
    if split not in SPLITS:
        raise ValueError(f"unknown STL-10 split {split!r}; allowed: {', '.join(SPLITS)}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; allowed: {', '.join(COLOURS)}")
    root = stl10_dir(path)
    classes = _class_names(root / "class_names.txt")
    x_file = root / f"{split}_X.bin"
    if split == "unlabeled":
        n = record_count(x_file, RECORD_BYTES, layout=LAYOUT)
        labels = np.full(n, -1, dtype=np.int64)
    else:
        labels = _labels(root / f"{split}_y.bin", len(classes))
        n = record_count(x_file, RECORD_BYTES, expected=len(labels), layout=LAYOUT)
    samples = (RecordFile(x_file, n, RECORD, (SIDE, SIDE), grey_images) if colour == "grey" else
               RecordFile(x_file, n, RECORD, (SIDE, SIDE, 3), rgb_images))
    return Dataset("stl10", samples, labels, classes, "image")


SOURCES = {
    "stl10": Source(load, "image", "STL-10 binary format (path: stl10_binary/ or its parent); grey 96 x 96 "
                    "(or RGB 96 x 96 x 3 with [data] colour = 'rgb'), 10 classes, read lazily; split 'unlabeled' "
                    "= 100000 images labelled -1", needs_path=True, splits=SPLITS, colours=COLOURS),
}
