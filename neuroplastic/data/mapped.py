"""Samples read on demand: data sets larger than memory behind a small array-like interface.

:class:`LazyArray` gives ``len``, ``shape``, ``dtype`` and numpy-style indexing (int, slice, index
or boolean array, optionally followed by indices into the sample) and returns float32 ndarrays;
subclasses only say how to read a sorted set of samples. :class:`RecordFile` reads fixed-size
uint8 records of a binary file (STL-10; any format with one record per sample).

Why not ``np.memmap``: the pages of a file mapping that a process has touched count in its
resident set size until the mapping is closed, so one pass over STL-10's 2.76 GB ``unlabeled_X.bin``
through a memmap ends with about 2.76 GB resident (``benchmarks/bench_stl10_memory.py`` measures
both). :class:`RecordFile` reads each request with a positioned ``readinto`` into a fresh buffer:
the kernel's page cache still makes re-reads fast, but nothing stays in the process beyond the
arrays it returns. The objects hold paths, not open files, so they pickle to worker processes.
"""
from __future__ import annotations

import copy as _copy
import operator
from pathlib import Path
from typing import Callable

import numpy as np

from . import DataError, _os_reason, check_file

__all__ = ["LUMA", "LazyArray", "RecordFile", "grey", "record_count", "rgb"]

#: ITU-R BT.601 luma weights of R, G, B: the grey level of every colour data set (and of the views' grey).
LUMA = np.array([0.299, 0.587, 0.114])


def grey(rgb: np.ndarray, axis: int = -1) -> np.ndarray:
    """Grey float32 in [0, 1] from uint8 RGB whose colour channels lie along ``axis``."""
    channels = np.moveaxis(rgb, axis, 0)          # a view; three scaled adds are 15x faster than tensordot
    w = LUMA.astype(np.float32) / np.float32(255)
    g = channels[0] * w[0]
    g += channels[1] * w[1]
    g += channels[2] * w[2]
    return np.clip(g, 0.0, 1.0, out=g)   # the weights sum to 1 only up to float32 rounding


def rgb(raw: np.ndarray, axis: int = -1) -> np.ndarray:
    """Colour float32 in [0, 1], channels last and C-contiguous, from uint8 RGB whose channels lie along ``axis``.

    Each value is the byte / 255, correctly rounded to float32.
    """
    out = np.array(np.moveaxis(raw, axis, -1), dtype=np.float32, order="C")
    out /= np.float32(255)
    return out


class LazyArray:
    """An ``(n, *sample_shape)`` float32 array whose samples are read only when indexed.

    Indexing returns ndarrays; ``np.asarray(lazy)`` reads everything. Subclasses implement
    ``_read(index)`` for a sorted array of distinct sample indices.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, n: int, sample_shape: tuple[int, ...]):
        self._n = int(n)
        self.sample_shape = tuple(int(s) for s in sample_shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes the whole array would take in memory (nothing is read)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"

    def astype(self, dtype, copy: bool = True) -> "LazyArray":
        """The same samples read as ``dtype``: still lazy (a shallow copy that converts what it reads)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype and not copy:
            return self
        out = _copy.copy(self)
        out.dtype = dtype
        return out

    def _read(self, index: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _take(self, index: np.ndarray) -> np.ndarray:
        """Samples at a flat array of valid indices, in that order (duplicates allowed)."""
        if len(index) == 0:
            return np.empty((0, *self.sample_shape), self.dtype)
        if np.all(index[1:] > index[:-1]):
            return np.asarray(self._read(index), self.dtype)
        unique, inverse = np.unique(index, return_inverse=True)
        return np.asarray(self._read(unique), self.dtype)[inverse]

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:
            key = slice(None)
        if isinstance(key, (int, np.integer)):
            i = operator.index(key)
            if not -self._n <= i < self._n:
                raise IndexError(f"index {i} is out of bounds for {self._n} samples")
            return self._take(np.array([i % self._n]))[0][rest]
        if isinstance(key, slice):
            r = range(self._n)[key]
            index = np.arange(r.start, r.stop, r.step)
        else:
            index = np.asarray(key)
            if index.size == 0 and index.dtype != bool:       # [] is a float array to numpy
                index = index.astype(np.int64)
            if index.dtype == bool:
                if index.shape != (self._n,):
                    raise IndexError(f"boolean index of shape {index.shape} for {self._n} samples")
                index = np.flatnonzero(index)
            elif not np.issubdtype(index.dtype, np.integer):
                raise IndexError(f"samples are indexed by int, slice or integer/boolean array, not {index.dtype}")
            if index.size and (index.min() < -self._n or index.max() >= self._n):
                raise IndexError(f"index out of bounds for {self._n} samples")
            index = index % self._n
        if any(not isinstance(k, (slice, type(None), type(Ellipsis))) and np.ndim(k) > 0 for k in rest):
            # arrays after the first axis broadcast with it (numpy's advanced indexing): read each
            # distinct sample once, then let numpy pair the indices up
            unique, inverse = np.unique(index, return_inverse=True)
            return self._take(unique)[(inverse.reshape(index.shape), *rest)]
        out = self._take(index.ravel()).reshape(*index.shape, *self.sample_shape)
        return out[(slice(None),) * index.ndim + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        for i in range(self._n):
            yield self[i]


def record_count(path: Path, record_bytes: int, expected: int | None = None, layout: str = "") -> int:
    """Number of ``record_bytes`` records in ``path``; a size that does not fit is a truncated file."""
    path = check_file(path, layout or "the data file")
    size = path.stat().st_size
    if expected is not None and size != expected * record_bytes:
        raise DataError(path, f"truncated file: {size} bytes, expected {expected} x {record_bytes} = "
                        f"{expected * record_bytes} bytes ({layout}, one per label)")
    if size % record_bytes or size == 0:
        raise DataError(path, f"truncated file: {size} bytes is not a positive multiple of {record_bytes} "
                        f"bytes ({layout})")
    return size // record_bytes


class RecordFile(LazyArray):
    """Fixed-size uint8 records of a binary file, each converted to a float32 sample when read.

    ``convert`` maps a uint8 batch ``(k, *record_shape)`` to float32 ``(k, *sample_shape)``.
    Reads go in chunks of at most ``chunk`` records, so reading everything never holds more than
    one chunk of raw bytes besides the result.
    """

    def __init__(self, path, n: int, record_shape: tuple[int, ...], sample_shape: tuple[int, ...],
                 convert: Callable[[np.ndarray], np.ndarray], offset: int = 0, chunk: int = 1024):
        super().__init__(n, sample_shape)
        self.path = Path(path)
        self.record_shape = tuple(record_shape)
        self.record_bytes = int(np.prod(record_shape))
        self.convert = convert
        self.offset = int(offset)
        self.chunk = int(chunk)

    def _read(self, index: np.ndarray) -> np.ndarray:
        out = None if len(index) <= self.chunk else np.empty((len(index), *self.sample_shape), self.dtype)
        try:
            fh = open(self.path, "rb", buffering=0)
        except OSError as err:
            raise DataError(self.path, f"cannot read the data file: {_os_reason(err)}") from None
        with fh:
            for start in range(0, len(index), self.chunk):
                part = index[start:start + self.chunk]
                raw = np.empty((len(part), *self.record_shape), np.uint8)
                flat = raw.reshape(len(part), -1)
                runs = np.flatnonzero(np.diff(part) != 1) + 1   # consecutive records: one read each
                for lo, hi in zip(np.r_[0, runs], np.r_[runs, len(part)]):
                    try:
                        got = _read_at(fh, flat[lo:hi], self.offset + int(part[lo]) * self.record_bytes)
                    except OSError as err:
                        raise DataError(self.path, f"cannot read the data file: {_os_reason(err)}") from None
                    if got != flat[lo:hi].nbytes:
                        raise DataError(self.path, f"file shrank while reading: records {int(part[lo])}.."
                                        f"{int(part[hi - 1])} need {flat[lo:hi].nbytes} bytes, got {got}")
                if out is None:                  # one chunk: no copy (and no fresh pages to fault in)
                    return np.asarray(self.convert(raw), self.dtype)
                out[start:start + len(part)] = self.convert(raw)
        return out


def _read_at(fh, buf: np.ndarray, offset: int) -> int:
    """Fill ``buf`` from ``offset`` of the file; returns the bytes read (fewer only at the end of file)."""
    view, done = memoryview(buf).cast("B"), 0
    fh.seek(offset)
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            break
        done += got
    return done
