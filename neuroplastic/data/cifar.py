"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in their published "python version" pickle batches.

``cifar-10-batches-py/`` holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``; ``cifar-100-python/`` holds ``train``, ``test`` and ``meta``. Each batch is a
pickled dict whose ``b"data"`` is an ``(N, 3072)`` uint8 array: per image 1024 red, then 1024 green,
then 1024 blue values, each plane a row-major 32 x 32 image; the labels are ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100), the names are in the meta file.

Unpickling can run arbitrary code, so only load files from a trusted source. As a guard, the
unpickler here resolves only the few numpy globals a CIFAR batch contains and refuses any other.
The images are converted to grey float32 in [0, 1] and held in memory (60000 x 32 x 32 x 4 bytes
= 245 MB for the whole set).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from . import Dataset, DataError, Source
from .mapped import grey

__all__ = ["SOURCES", "load_cifar10", "load_cifar100"]

SIDE = 32
LAYOUT = (f"(N, {3 * SIDE * SIDE}) uint8: per image {SIDE * SIDE} red, {SIDE * SIDE} green, {SIDE * SIDE} blue "
          f"values, each plane a row-major {SIDE} x {SIDE} image")

# (directory, {split: batch files}, meta file, {label: (labels key, names key)})
VARIANTS = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", {"class": (b"labels", b"label_names")}),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]},
                 "meta", {"fine": (b"fine_labels", b"fine_label_names"),
                          "coarse": (b"coarse_labels", b"coarse_label_names")}),
}

# The globals a CIFAR pickle may name: numpy's array reconstruction (under numpy 1 and 2 module
# names) and ``_codecs.encode``, which Python 3 uses to pickle bytes at protocol 2.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes and numpy arrays, and nothing else."""

    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise _Refused(f"{module}.{name}")
        if module.startswith("numpy.core."):       # numpy 1 names; numpy 2 warns on numpy.core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def unpickle(path: Path) -> dict:
    """The dict of one CIFAR pickle file; any failure is a :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(path, "file not found (expected a CIFAR python batch: a pickled dict)")
    try:
        with open(path, "rb") as fh:
            obj = _BatchUnpickler(fh, encoding="bytes").load()
    except _Refused as err:
        raise DataError(path, f"refused to unpickle the global {err}: a CIFAR batch holds only numpy arrays, "
                        "lists and bytes (unpickling runs code: load only trusted files)") from None
    except Exception as err:   # a truncated or foreign file can fail in many ways
        raise DataError(path, f"cannot unpickle ({type(err).__name__}: {err}); expected a CIFAR python "
                        "batch, a pickled dict (truncated or not a CIFAR file?)") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"unpickled a {type(obj).__name__}, expected a dict (a CIFAR python batch)")
    return obj


def _get(d: dict, key: bytes, path: Path):
    """``d[key]``, accepting str keys too (batches re-saved under Python 3)."""
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    keys = ", ".join(repr(k) for k in d)
    raise DataError(path, f"no {key!r} entry; entries: {keys or 'none'}")


def cifar_dir(path, variant: str) -> Path:
    """The batches directory: ``path`` itself or its child named as published."""
    name, splits, meta, _ = VARIANTS[variant]
    p = Path(path)
    if not p.is_dir():
        raise DataError(p, f"directory not found (expected the {variant} '{name}' directory or its parent)")
    if (p / name).is_dir():
        return p / name
    if (p / meta).exists() or any((p / f).exists() for files in splits.values() for f in files):
        return p
    files = ", ".join([*splits["train"], *splits["test"], meta])
    raise DataError(p, f"no {variant} data here: expected a '{name}' directory (or to be one) holding {files}")


def _load(variant: str, path, split: str, label: str) -> Dataset:
    name, splits, meta_file, labelings = VARIANTS[variant]
    if split not in splits:
        raise ValueError(f"unknown {variant} split {split!r}; allowed: {', '.join(splits)}")
    if label not in labelings:
        raise ValueError(f"unknown {variant} label {label!r}; allowed: {', '.join(labelings)}")
    label_key, names_key = labelings[label]
    root = cifar_dir(path, variant)
    meta_path = root / meta_file
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n)
                    for n in _get(unpickle(meta_path), names_key, meta_path))
    images, labels = [], []
    for f in splits[split]:
        batch_path = root / f
        batch = unpickle(batch_path)
        data = _get(batch, b"data", batch_path)
        shape = getattr(data, "shape", None)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or shape[1] != 3 * SIDE**2:
            what = f"{shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(batch_path, f"data is {what}, expected {LAYOUT}")
        y = np.asarray(_get(batch, label_key, batch_path))
        if y.shape != (len(data),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(batch_path, f"{label_key!r} has shape {y.shape}, expected {len(data)} integer labels "
                            "(one per image)")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(batch_path, f"{label_key!r} holds labels {y.min()}..{y.max()}, expected 0.."
                            f"{len(classes) - 1} ({len(classes)} names in {meta_path.name})")
        images.append(grey(data.reshape(-1, 3, SIDE, SIDE), axis=1))
        labels.append(y.astype(np.int64))
    return Dataset(variant, np.concatenate(images), np.concatenate(labels), classes, "image")


def load_cifar10(path, split: str = "train", label: str = "class", seed: int = 0, **_) -> Dataset:
    """CIFAR-10 ``split`` from ``cifar-10-batches-py`` (or its parent): grey 32 x 32 images."""
    return _load("cifar10", path, split, label)


def load_cifar100(path, split: str = "train", label: str = "fine", seed: int = 0, **_) -> Dataset:
    """CIFAR-100 ``split`` from ``cifar-100-python`` (or its parent); ``label`` 'fine' (100) or 'coarse' (20)."""
    return _load("cifar100", path, split, label)


SOURCES = {
    "cifar10": Source(load_cifar10, "image", "CIFAR-10 python batches (path: cifar-10-batches-py/ or its parent); "
                      "grey 32 x 32, 10 classes; trusted files only (pickle)",
                      needs_path=True, splits=("train", "test")),
    "cifar100": Source(load_cifar100, "image", "CIFAR-100 python batches (path: cifar-100-python/ or its parent); "
                       "grey 32 x 32, label 'fine' (100 classes) or 'coarse' (20); trusted files only (pickle)",
                       needs_path=True, splits=("train", "test"), labels=("fine", "coarse")),
}
