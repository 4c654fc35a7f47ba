"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in their published "python version" pickle batches.

``cifar-10-batches-py/`` holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``; ``cifar-100-python/`` holds ``train``, ``test`` and ``meta``. Each batch is a
pickled dict whose ``b"data"`` is an ``(N, 3072)`` uint8 array: per image 1024 red, then 1024 green,
then 1024 blue values, each plane a row-major 32 x 32 image; the labels are ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100), the names are in the meta file.

Unpickling can run arbitrary code, so only load files from a trusted source. As a guard, the
unpickler here resolves only the few numpy globals a CIFAR batch contains and refuses any other,
and it keeps what a file can ask for bounded by the file: no array, string or dtype larger than the
file's own bytes can hold, no container of more than :data:`MAX_ITEMS` elements (counting an object
shared by reference every time it is referenced), no file over :data:`MAX_FILE_BYTES`. A hostile file
is refused before anything large is allocated.
The images are converted to grey float32 in [0, 1] and held in memory (60000 x 32 x 32 x 4 bytes
= 245 MB for the whole set) or, with ``colour="rgb"``, to 32 x 32 x 3 float32 (rows, columns,
channels; three times as much).
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from . import COLOURS, Dataset, DataError, Source, _os_reason
from .mapped import grey, rgb

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

#: The largest batch file read (CIFAR-100's ``train``, 50000 images, is 155 MB).
MAX_FILE_BYTES = 256 * 2**20
#: The most elements all the containers of one file may hold together, an element shared by reference
#: counted every time it is referenced (a batch of 50000 images has 3 lists of 50000).
MAX_ITEMS = 1_000_000
#: The most images of one batch file, and the most class names of a meta file.
MAX_IMAGES, MAX_NAMES, MAX_NAME_LENGTH = 50000, 100, 200
#: How deep containers may nest in a batch (dict -> list -> item).
MAX_DEPTH = 4

# The globals a CIFAR pickle may name: numpy's array reconstruction (under numpy 1 and 2 module
# names) and ``_codecs.encode``, which Python 3 uses to pickle bytes at protocol 2. The unpickler
# never hands out the real functions: each name resolves to a checked stand-in (see _Checked).
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): "ndarray", ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct", ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar", ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer", ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("_codecs", "encode"): "encode",
}
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


class _Refused(pickle.UnpicklingError):
    pass


class _TooLarge(pickle.UnpicklingError):
    pass


def _plain_dtype(dt) -> np.dtype:
    """``dt`` if it is a plain number type (bool, int, uint, float, at most 8 bytes), else refused."""
    if not isinstance(dt, np.dtype) or dt.kind not in "biuf" or dt.subdtype is not None or dt.names is not None \
            or dt.itemsize > 8:
        raise _Refused(f"the dtype {dt!r}: a CIFAR batch holds only plain numbers (no objects, strings, "
                       "records or sub-arrays)")
    return dt


def _count(shape) -> int:
    """The number of elements of ``shape`` (a tuple of ints >= 0), refused if it is not one."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or len(shape) > 32 or \
            not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 0 for k in shape):
        raise _Refused(f"the array shape {shape!r}: expected a tuple of sizes >= 0")
    n = 1
    for k in shape:
        n *= int(k)
    return n


class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: a token for ``_reconstruct``, never called itself."""

    def __call__(self, *args, **kwargs):
        raise _Refused("numpy.ndarray called directly (a CIFAR pickle only passes it to _reconstruct)")


class _Checked:
    """The stand-ins of the allowed globals, bound to the size of one file: they check every request
    against what the file can hold before numpy allocates anything."""

    def __init__(self, limit: int):
        self.limit = limit                  # bytes: no array or string may exceed the file's size
        self.ndarray = _NdarrayType()

    def _fits(self, nbytes: int, what: str) -> None:
        if nbytes > self.limit:
            raise _TooLarge(f"{what} of {nbytes} bytes requested, larger than the {self.limit} bytes the file "
                            "holds")

    def dtype(self, obj, align=False, copy=True):
        if isinstance(obj, bytes):
            obj = obj.decode("ascii", "replace")
        if not isinstance(obj, str) or len(obj) > 8:
            raise _Refused(f"the dtype {obj!r}: expected a plain number type such as 'u1'")
        try:
            dt = np.dtype(obj, align=False, copy=True)      # a copy: a BUILD must never change numpy's own
        except TypeError as err:
            raise _Refused(f"the dtype {obj!r} ({err})") from None
        return _plain_dtype(dt)

    def reconstruct(self, subtype, shape, typecode):
        if subtype is not self.ndarray:
            raise _Refused(f"_reconstruct of {type(subtype).__name__}: expected numpy.ndarray")
        if typecode not in (b"b", "b"):
            raise _Refused(f"_reconstruct with type code {typecode!r}: expected 'b'")
        self._fits(_count(shape), "an array")
        return np.ndarray(shape, np.int8)

    def scalar(self, dtype, data=None):
        dt = _plain_dtype(dtype)
        if not isinstance(data, bytes) or len(data) != dt.itemsize:
            raise _Refused(f"a numpy scalar of {dt} from {type(data).__name__}: expected {dt.itemsize} bytes")
        return np.frombuffer(data, dt)[0]

    def frombuffer(self, buf, dtype, shape, order):
        dt = _plain_dtype(dtype)
        if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
            raise _Refused(f"_frombuffer of {type(buf).__name__}, order {order!r}: expected bytes, order 'C' or 'F'")
        nbytes = _count(shape) * dt.itemsize
        self._fits(nbytes, "an array")
        if nbytes != len(buf):
            raise _Refused(f"_frombuffer of {len(buf)} bytes for shape {shape} {dt} ({nbytes} bytes)")
        return np.frombuffer(buf, dt).reshape(shape, order=order)

    def encode(self, obj, encoding="utf-8", errors="strict"):
        if not isinstance(obj, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1 \
                or errors != "strict":
            raise _Refused(f"_codecs.encode(..., {encoding!r}): a CIFAR pickle encodes only str as latin1")
        self._fits(len(obj), "a byte string")
        try:
            return obj.encode("latin1")
        except UnicodeEncodeError as err:
            raise _Refused(f"_codecs.encode of a str that is not latin1 ({err})") from None

    def setstate_array(self, arr: np.ndarray, state) -> None:
        """What BUILD does to an array made by _reconstruct, checked: shape, dtype and raw bytes agree."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"array state of {type(state).__name__}: expected (version, shape, dtype, "
                           "fortran, bytes)")
        shape, dt, fortran, raw = state[-4:]
        dt = _plain_dtype(dt)
        nbytes = _count(shape) * dt.itemsize
        self._fits(nbytes, "an array")
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != nbytes:
            size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
            raise _Refused(f"array data of {size} for shape {shape} {dt}: expected {nbytes} bytes")
        arr.__setstate__((shape, dt, bool(fortran), raw))


class _BatchUnpickler(pickle._Unpickler):
    """An unpickler that builds dicts, lists, bytes and plain numpy arrays, and nothing else, bounded by its file.

    The pure-Python unpickler, so that every opcode that builds something can be checked: BUILD
    (``__setstate__``) only on arrays and dtypes and only with states that fit, BYTEARRAY8 only as long
    as the file, and the memo a dict (the C unpickler sizes an array by the largest memo index).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, size: int):
        super().__init__(file, encoding="bytes")
        self.size = size
        self.checked = _Checked(limit=size)

    def find_class(self, module, name):
        what = _SAFE_GLOBALS.get((module, name))
        if what is None:
            raise _Refused(f"the global {module}.{name}")
        return getattr(self.checked, what)

    def persistent_load(self, pid):
        raise _Refused("a persistent id")

    def load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if type(inst) is np.ndarray:
            self.stack.pop()
            self.checked.setstate_array(inst, state)
        elif isinstance(inst, np.dtype):
            super().load_build()
            _plain_dtype(inst)
        else:
            raise _Refused(f"setting the state of a {type(inst).__name__}")
    dispatch[pickle.BUILD[0]] = load_build

    def load_ext(self):
        raise _Refused("an extension code (copyreg registry)")
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = load_ext
    del _op

    def load_bytearray8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > self.size:
            raise _TooLarge(f"a bytearray of {n} bytes requested, larger than the {self.size} bytes the file holds")
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


class _Bounded:
    """A read-only binary file whose ``read(n)`` never asks for more than the file holds."""

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size

    def read(self, n=-1):
        return self.fh.read(self.size if n is None or n < 0 else min(n, self.size))

    def readline(self):
        return self.fh.readline(self.size + 1)


def _check_items(obj) -> None:
    """Refuse containers that nest deeper than MAX_DEPTH or hold more than MAX_ITEMS elements in all.

    Elements are counted as numpy (or any walk) would see them: an object referenced n times counts n
    times, so a small file of shared references ("billion laughs") is refused before it is expanded.
    """
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(o, depth: int) -> int:
        if not isinstance(o, (list, tuple, dict, set, frozenset)):
            return 1
        key = id(o)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise _Refused("a container that holds itself")
        if depth > MAX_DEPTH:
            raise _Refused(f"containers nested deeper than {MAX_DEPTH} levels")
        open_ids.add(key)
        total = 1
        for item in (o for pair in o.items() for o in pair) if isinstance(o, dict) else o:
            total += size(item, depth + 1)
            if total > MAX_ITEMS:
                raise _TooLarge(f"containers of more than {MAX_ITEMS} elements (counting shared references)")
        open_ids.discard(key)
        sizes[key] = total
        return total

    size(obj, 0)


def unpickle(path: Path) -> dict:
    """The dict of one CIFAR pickle file; any failure is a :class:`DataError` naming the file."""
    path = Path(path)
    expected = "a CIFAR python batch: a pickled dict"
    if path.is_dir():
        raise DataError(path, f"is a directory, expected a file ({expected})")
    if not path.is_file():
        raise DataError(path, f"file not found (expected {expected})")
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise DataError(path, f"{size} bytes, larger than any CIFAR batch ({MAX_FILE_BYTES} bytes at "
                                f"most; expected {expected})")
            obj = _BatchUnpickler(_Bounded(fh, size), size).load()
        _check_items(obj)
    except DataError:
        raise
    except OSError as err:
        raise DataError(path, f"cannot read: {_os_reason(err)} (expected {expected})") from None
    except _TooLarge as err:
        raise DataError(path, f"refused: {err} (not a CIFAR batch; unpickling runs code: load only trusted "
                        "files)") from None
    except _Refused as err:
        raise DataError(path, f"refused to unpickle {err}: a CIFAR batch holds only numpy arrays, "
                        "lists and bytes (unpickling runs code: load only trusted files)") from None
    except MemoryError:
        raise DataError(path, f"cannot unpickle: out of memory (expected {expected})") from None
    except RecursionError:
        raise DataError(path, f"cannot unpickle: nested too deeply (expected {expected})") from None
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
    shown = [repr(k)[:40] for _, k in zip(range(10), d)]
    keys = ", ".join(shown) + (f", ... ({len(d)} in all)" if len(d) > len(shown) else "")
    raise DataError(path, f"no {key!r} entry; entries: {keys or 'none'}")


def _class_names(meta: dict, key: bytes, path: Path) -> tuple[str, ...]:
    """The class names under ``key`` of a meta file: a list of at most MAX_NAMES short (byte) strings."""
    names = _get(meta, key, path)
    expected = f"a list of at most {MAX_NAMES} class names (bytes or str of at most {MAX_NAME_LENGTH} characters)"
    if not isinstance(names, (list, tuple)) or not 1 <= len(names) <= MAX_NAMES:
        what = f"{len(names)} entries" if isinstance(names, (list, tuple)) else f"a {type(names).__name__}"
        raise DataError(path, f"{key!r} is {what}, expected {expected}")
    out = []
    for i, n in enumerate(names):
        if not isinstance(n, (bytes, str)) or len(n) > MAX_NAME_LENGTH:
            what = f"a {type(n).__name__}" if not isinstance(n, (bytes, str)) else f"{len(n)} characters long"
            raise DataError(path, f"{key!r} entry {i} is {what}, expected {expected}")
        try:
            out.append(n.decode("utf-8") if isinstance(n, bytes) else n)
        except UnicodeDecodeError:
            raise DataError(path, f"{key!r} entry {i} = {n[:40]!r} is not UTF-8 text, expected {expected}") from None
    return tuple(out)


def _labels(batch: dict, key: bytes, n: int, path: Path) -> np.ndarray:
    """The ``n`` integer labels under ``key`` of a batch: a list (or 1-d integer array) of one per image."""
    y = _get(batch, key, path)
    expected = f"expected {n} integer labels (one per image)"
    if isinstance(y, np.ndarray):
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(path, f"{key!r} has shape {y.shape} {y.dtype}, {expected}")
        return y.astype(np.int64)
    if not isinstance(y, (list, tuple)):
        raise DataError(path, f"{key!r} is a {type(y).__name__}, {expected}")
    if len(y) != n:
        raise DataError(path, f"{key!r} has shape ({len(y)},), {expected}")
    for i, v in enumerate(y):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not -2**63 <= v < 2**63:
            shown = repr(v)[:40] if isinstance(v, (int, np.integer, bool)) else f"a {type(v).__name__}"
            raise DataError(path, f"{key!r} entry {i} is {shown}, {expected}")
    return np.asarray(y, dtype=np.int64)


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


def _load(variant: str, path, split: str, label: str, colour: str = "grey") -> Dataset:
    name, splits, meta_file, labelings = VARIANTS[variant]
    if split not in splits:
        raise ValueError(f"unknown {variant} split {split!r}; allowed: {', '.join(splits)}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; allowed: {', '.join(COLOURS)}")
    if label not in labelings:
        raise ValueError(f"unknown {variant} label {label!r}; allowed: {', '.join(labelings)}")
    label_key, names_key = labelings[label]
    root = cifar_dir(path, variant)
    meta_path = root / meta_file
    classes = _class_names(unpickle(meta_path), names_key, meta_path)
    images, labels = [], []
    for f in splits[split]:
        batch_path = root / f
        batch = unpickle(batch_path)
        data = _get(batch, b"data", batch_path)
        shape = getattr(data, "shape", None)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or shape[1] != 3 * SIDE**2:
            what = f"{shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(batch_path, f"data is {what}, expected {LAYOUT}")
        if len(data) > MAX_IMAGES:
            raise DataError(batch_path, f"data holds {len(data)} images, more than a CIFAR batch ({MAX_IMAGES})")
        y = _labels(batch, label_key, len(data), batch_path)
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(batch_path, f"{label_key!r} holds labels {y.min()}..{y.max()}, expected 0.."
                            f"{len(classes) - 1} ({len(classes)} names in {meta_path.name})")
        planes = data.reshape(-1, 3, SIDE, SIDE)                  # (image, channel, row, column)
        images.append(grey(planes, axis=1) if colour == "grey" else rgb(planes, axis=1))
        labels.append(y)
    return Dataset(variant, np.concatenate(images), np.concatenate(labels), classes, "image")


def load_cifar10(path, split: str = "train", label: str = "class", seed: int = 0, colour: str = "grey",
                 **_) -> Dataset:
    """CIFAR-10 ``split`` from ``cifar-10-batches-py`` (or its parent): grey 32 x 32 images or, ``colour="rgb"``,
    32 x 32 x 3."""
    return _load("cifar10", path, split, label, colour)


def load_cifar100(path, split: str = "train", label: str = "fine", seed: int = 0, colour: str = "grey",
                  **_) -> Dataset:
    """CIFAR-100 ``split`` from ``cifar-100-python`` (or its parent); ``label`` 'fine' (100) or 'coarse' (20);
    grey 32 x 32 images or, ``colour="rgb"``, 32 x 32 x 3."""
    return _load("cifar100", path, split, label, colour)


SOURCES = {
    "cifar10": Source(load_cifar10, "image", "CIFAR-10 python batches (path: cifar-10-batches-py/ or its parent); "
                      "grey 32 x 32 (or RGB 32 x 32 x 3 with [data] colour = 'rgb'), 10 classes; trusted files "
                      "only (pickle)", needs_path=True, splits=("train", "test"), colours=COLOURS),
    "cifar100": Source(load_cifar100, "image", "CIFAR-100 python batches (path: cifar-100-python/ or its parent); "
                       "grey 32 x 32 (or RGB 32 x 32 x 3 with [data] colour = 'rgb'), label 'fine' (100 classes) "
                       "or 'coarse' (20); trusted files only (pickle)", needs_path=True, splits=("train", "test"),
                       labels=("fine", "coarse"), colours=COLOURS),
}
