"""Glimpse sequences from samples of any domain: the one stimulus interface of every engine.

An image is scanned as a grid of patches; a sound as successive windows; a clip as successive
blocks of frames. Consecutive glimpses of one sample are *fixations* (y = +1); a jump to the
glimpse at the same position of another sample is a *saccade* (y = -1). Which steps are saccades
is decided by the training loop (it depends on the rule); this module only cuts the glimpses in
order, as ``(n_samples, n_glimpses, n_inputs)`` arrays, so engines never branch on the domain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.augment import random_window
from ..data.mapped import LazyArray
from ..errors import SettingError

__all__ = ["EAGER_BYTES", "GlimpseGrid", "Glimpses", "PatchGrids", "SaccadeStream", "glimpse_grid", "glimpse_sequences",
           "on_off", "patch_grid", "saccade_stream", "scan_positions", "time_windows"]


@dataclass(frozen=True)
class GlimpseGrid:
    """Glimpses ``(n_samples, n_glimpses, n_inputs)`` and where each starts: ``positions`` (n_glimpses, k).

    ``k = 2`` (top-left row, col) for images, ``k = 1`` (first sample or frame) for sounds and clips.
    """

    patches: np.ndarray
    positions: np.ndarray


def scan_positions(height: int, width: int, patch: int, stride: int, scan: str = "raster") -> np.ndarray:
    """Top-left corners of the glimpses, in the order the eye visits them.

    ``raster`` reads rows left to right; ``snake`` alternates direction so that
    consecutive glimpses are always neighbours.
    """
    if scan not in ("raster", "snake"):
        raise ValueError(f"unknown scan {scan!r}; known: 'raster', 'snake'")
    if patch > min(height, width):
        raise SettingError("stimulus.patch", f"[stimulus] patch = {patch} is larger than the images ({height} x {width})")
    rows = range(0, height - patch + 1, stride)
    cols = list(range(0, width - patch + 1, stride))
    out = []
    for i, r in enumerate(rows):
        order = cols[::-1] if (scan == "snake" and i % 2) else cols
        out += [(r, c) for c in order]
    return np.asarray(out, dtype=np.int64)


#: Glimpse sequences of a lazily read data set (a :class:`~neuroplastic.data.mapped.LazyArray`, e.g.
#: STL-10) are cut into memory, a batch of samples at a time, when they take at most this many bytes;
#: larger ones stay a :class:`Glimpses`, cut from the batch of samples each index asks for.
EAGER_BYTES = 1 << 30


def _cut(samples: np.ndarray, positions: np.ndarray, patch: int) -> np.ndarray:
    """Glimpses ``(n, len(positions), n_inputs)`` of samples in memory, all positions from one read.

    ``positions`` ``(T, 2)`` are top-left corners of ``patch x patch`` squares of images ``(n, h, w)`` (or
    ``(n, h, w, C)``: a glimpse is the flattened ``patch x patch x C`` block); ``(T, 1)`` are starts of
    ``patch``-long windows along the time axis of ``(n, length, ...)``.
    """
    n = len(samples)
    if positions.shape[1] == 2:
        return np.stack([samples[:, r:r + patch, c:c + patch].reshape(n, -1) for r, c in positions], axis=1)
    starts = positions[:, 0]
    view = np.lib.stride_tricks.sliding_window_view(samples, patch, axis=1)[:, starts]   # (n, T, ..., window)
    view = np.moveaxis(view, -1, 2)                                                    # (n, T, window, ...)
    return view.reshape(n, len(starts), -1).copy()


class Glimpses(LazyArray):
    """The glimpse sequences ``(n, n_glimpses, n_inputs)`` of a lazily read data set, cut when indexed.

    An index reads its samples from ``samples`` once, ``chunk`` samples at a time, and cuts every
    glimpse position from each read: the file behind ``samples`` is never read per position, and
    nothing but the asked-for glimpses (and one chunk of samples) is held.
    """

    def __init__(self, samples, positions: np.ndarray, patch: int, chunk: int = 256):
        self.samples, self.positions, self.patch = samples, np.asarray(positions), int(patch)
        self.chunk = int(chunk)
        if self.positions.shape[1] == 2:
            n_in = self.patch * self.patch * int(np.prod(samples.shape[3:], dtype=np.int64))    # x channels
        else:
            n_in = self.patch * int(np.prod(samples.shape[2:], dtype=np.int64))
        super().__init__(len(samples), (len(self.positions), n_in))

    def _read(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.sample_shape), self.dtype)
        for start in range(0, len(index), self.chunk):
            part = index[start:start + self.chunk]
            out[start:start + len(part)] = _cut(np.asarray(self.samples[part]), self.positions, self.patch)
        return out


def _grid(samples, positions: np.ndarray, patch: int) -> GlimpseGrid:
    """Glimpses of samples in memory, cut at once; of a lazy data set, cut chunk by chunk or kept lazy."""
    if not isinstance(samples, LazyArray):
        return GlimpseGrid(_cut(np.asarray(samples), positions, patch), positions)
    lazy = Glimpses(samples, positions, patch)
    return GlimpseGrid(lazy if lazy.nbytes > EAGER_BYTES else lazy[:], positions)


def glimpse_grid(images, patch: int, stride: int, scan: str = "raster") -> GlimpseGrid:
    """Cut every image into its glimpse sequence (a view-free copy, flattened patches).

    ``images`` ``(n, h, w)`` in memory are cut at once; a lazily read set is read once, a chunk of
    images at a time, and stays lazy (:class:`Glimpses`) if its glimpses exceed :data:`EAGER_BYTES`.
    Colour images ``(n, h, w, C)`` give glimpses of ``patch x patch x C`` inputs (row, column, channel).
    """
    if not isinstance(images, LazyArray):
        images = np.asarray(images)
    n, h, w = images.shape[:3]
    pos = scan_positions(h, w, patch, stride, scan)
    if len(pos) < 2:
        raise SettingError("stimulus.patch", f"[stimulus] patch = {patch}, stride = {stride} give {len(pos)} glimpse(s) on "
                         f"{h} x {w} images; a sequence needs at least 2")
    return _grid(images, pos, patch)


def patch_grid(images: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Cut images ``(n, H, W)`` or ``(n, H, W, C)`` into their CPC patch grid ``(n, G_r, G_c, patch, patch, C)``.

    The convolutional form of :func:`glimpse_grid` (patches kept 2-d, in grid
    order); a copy, as the patches overlap when ``stride < patch``. ``C = 1`` for
    grey images.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    n, H, W, C = images.shape
    if patch > min(H, W):
        raise SettingError("stimulus.patch", f"[stimulus] patch = {patch} is larger than the images ({H} x {W})")
    rows, cols = range(0, H - patch + 1, stride), range(0, W - patch + 1, stride)
    out = np.empty((n, len(rows), len(cols), patch, patch, C), dtype=images.dtype)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[:, i, j] = images[:, r:r + patch, c:c + patch]
    return out


class PatchGrids:
    """The CPC patch grids of a set of grey images, cut batch by batch (the stimulus of conv CLAPP).

    The paper's vision setting: each image is cropped to ``crop x crop`` (at a
    random place for training, at the centre for the probe; ``crop = 0`` keeps
    the whole image) and cut into a grid of ``patch x patch`` patches every
    ``stride`` pixels. Nothing is cut in advance: a batch reads only its own
    images from ``samples`` (which may be a lazily read file), so the 100 000
    images of STL-10's unlabeled split never sit in memory as patches.

    As the authors' data pipeline does, ``flip`` mirrors each training image
    left-right with probability 1/2 (the probe's images never), and every image
    is normalised to ``(x - mean) / std`` before it is cut.
    """

    def __init__(self, samples, patch: int, stride: int, crop: int = 0, dtype="float32", *, flip: bool = False,
                 mean: float = 0.0, std: float = 1.0):
        self.samples, self.patch, self.stride, self.crop = samples, int(patch), int(stride), int(crop)
        self.flip, self.mean, self.std = bool(flip), float(mean), float(std)
        self.dtype = np.dtype(dtype)
        if len(samples.shape) != 3:
            raise ValueError(f"patch grids need grey images (n, h, w), got samples of shape {tuple(samples.shape)} "
                             "(convolutional CLAPP reads grey images: [data] colour = 'grey')")
        h, w = samples.shape[1:]
        if self.crop > min(h, w):
            raise ValueError(f"[stimulus] crop = {self.crop} is larger than the images ({h} x {w})")
        side = self.crop or min(h, w)
        if self.patch > side:
            raise ValueError(f"[stimulus] patch = {self.patch} is larger than the {'crops' if self.crop else 'images'} "
                             f"({side} x {side})")
        n_r = len(range(0, (self.crop or h) - self.patch + 1, self.stride))
        n_c = len(range(0, (self.crop or w) - self.patch + 1, self.stride))
        self.grid_shape = (n_r, n_c)
        if n_r < 2:
            raise ValueError(f"[stimulus] patch = {self.patch}, stride = {self.stride} give {n_r} row(s) of "
                             f"patches; a patch needs another below it to predict")

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, index, rng: np.random.Generator | None = None) -> np.ndarray:
        """Patch grids ``(len(index), G_r, G_c, patch, patch)`` of the images at ``index``.

        With ``rng``, each image is cropped at a random place and, with ``flip``, mirrored at random
        (training); without, cropped at its centre and never mirrored. The draws come from ``rng`` in
        this order: crop positions, then (only with ``flip``) the mirror coins.
        """
        index = np.asarray(index)
        images = np.asarray(self.samples[index], dtype=self.dtype)     # a lazy file reads just these
        if self.crop:
            images = random_window(images, rng, self.crop)
        if self.flip and rng is not None:
            mirror = rng.random(len(index)) < 0.5
            images[mirror] = images[mirror, :, ::-1]
        if self.mean != 0.0 or self.std != 1.0:
            images = (images - self.dtype.type(self.mean)) / self.dtype.type(self.std)
        return patch_grid(images, self.patch, self.stride)[..., 0]

    def chunks(self, size: int = 256):
        """Centre-cropped patch grids of every image, in order, ``size`` images at a time (for the probe)."""
        for start in range(0, len(self), size):
            yield self.batch(np.arange(start, min(start + size, len(self))))


def time_windows(samples: np.ndarray, window: int, hop: int) -> GlimpseGrid:
    """Cut sounds ``(n, length)`` or clips ``(n, frames, h, w)`` into successive windows along time.

    A glimpse is ``window`` samples (or frames, flattened) starting every ``hop``. A lazily read
    set is read as :func:`glimpse_grid` reads one.
    """
    if not isinstance(samples, LazyArray):
        samples = np.asarray(samples)
    n, length = samples.shape[:2]
    if window > length:
        raise SettingError("stimulus.patch", f"[stimulus] patch = {window} is longer than the samples "
                           f"({length} steps)")
    starts = np.arange(0, length - window + 1, hop)
    if len(starts) < 2:
        raise SettingError("stimulus.patch", f"[stimulus] patch = {window}, stride = {hop} give {len(starts)} "
                           f"glimpse(s) on samples of {length} steps; a sequence needs at least 2")
    return _grid(samples, starts[:, None], window)


def glimpse_sequences(dataset, stimulus) -> GlimpseGrid:
    """A data set's glimpse sequences under a protocol's ``[stimulus]`` table (``patch``, ``stride``, ``scan``,
    ``onoff``).

    ``patch`` is the glimpse size: pixels per side (images), samples (sounds) or frames (clips). With
    ``onoff``, glimpses of ``n`` values become ``2 n`` inputs (:func:`on_off`).
    """
    if dataset.domain == "image":
        grid = glimpse_grid(dataset.samples, stimulus.patch, stimulus.stride, stimulus.scan)
    else:
        grid = time_windows(dataset.samples, stimulus.patch, stimulus.stride)
    return GlimpseGrid(on_off(grid.patches), grid.positions) if getattr(stimulus, "onoff", False) else grid


def on_off(patches) -> np.ndarray:
    """ON and OFF inputs ``[x]+`` and ``[-x]+`` of every glimpse value, ON first: ``(..., n)`` -> ``(..., 2 n)``.

    Half-wave rectification, as retinal ON and OFF cells or auditory-nerve fibres split a signed signal
    into two non-negative rates; ``x = ON - OFF`` is kept. Glimpses read lazily are refused (they would
    be read whole).
    """
    if not isinstance(patches, np.ndarray):
        raise SettingError("stimulus.onoff", "[stimulus] onoff = true: the glimpses of this data set are read "
                           "lazily from disk, and ON/OFF inputs would hold all of them in memory twice; use [data] "
                           "max_samples to keep fewer, or onoff = false")
    return np.concatenate([np.maximum(patches, 0), np.maximum(-patches, 0)], axis=-1)


@dataclass(frozen=True)
class SaccadeStream:
    """One eye's path over a set of images: at step k it looks at glimpse ``position[k]`` of ``image[k]``.

    ``y[k]`` is +1 for a fixation (same image as step k - 1), -1 for a saccade
    (another image, same scan position) and 0 at the first step, which has no
    context and so no update.
    """

    image: np.ndarray
    position: np.ndarray
    y: np.ndarray

    def glimpses(self, patches: np.ndarray) -> np.ndarray:
        """The stream's inputs (length, n_in) from a glimpse grid's ``patches`` (n_images, T, n_in)."""
        return patches[self.image, self.position]


def saccade_stream(images: np.ndarray, n_positions: int, length: int, saccade_prob: float,
                   rng: np.random.Generator) -> SaccadeStream:
    """A continuous glimpse stream for online learning (the Brian2 engine and its numpy reference).

    The eye scans positions 0, 1, ..., n_positions - 1, 0, ... ; at every step it
    stays on its image (fixation) or, with probability ``saccade_prob``, jumps to
    the same position of another image drawn from ``images`` (saccade).
    """
    images = np.asarray(images)
    if len(images) < 2:
        raise ValueError("a saccade stream needs at least 2 images")
    image = np.empty(length, dtype=np.int64)
    y = np.ones(length)
    y[0] = 0.0
    saccade = rng.random(length) < saccade_prob
    jump = rng.integers(1, len(images), size=length)      # offset to another image, never itself
    k = rng.integers(len(images))
    image[0] = images[k]
    for step in range(1, length):
        if saccade[step]:
            k = (k + jump[step]) % len(images)
            y[step] = -1.0
        image[step] = images[k]
    return SaccadeStream(image, np.arange(length) % n_positions, y)
