"""UCF-101 (Soomro, Zamir & Shah 2012) as published: 13320 AVI clips of 101 human actions.

``path`` holds ``UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.avi`` and the split lists
``ucfTrainTestlist/``: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0{1,2,3}.txt``
(``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) and ``testlist0{1,2,3}.txt`` (the path only).
A clip's class is its directory: the published lists spell some file names differently from the
class (``HandstandPushups/v_HandStandPushups_...``).

A sample is the first ``frames`` frames of a clip, grey float32 in [0, 1], each frame area-averaged
down to ``size`` (rows, cols) (the 320 x 240 frames are squeezed to the square default). Clips
whose header counts fewer frames are skipped (every published clip has at least 29). Loading opens
only the containers' headers; frames are decoded when samples are indexed (:class:`Clips`), so a
``[data] max_samples`` subset decodes only itself. ``rate`` is the most common frame rate (most
clips are 25 fps, some 29.97); each clip's own is in ``dataset.samples.rates``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from . import Dataset, DataError, Source, inside, read_text
from .mapped import LazyArray

__all__ = ["Clips", "SOURCES", "SPLITS", "area_matrix", "load"]

SPLITS = tuple(f"{kind}{k}" for k in (1, 2, 3) for kind in ("train", "test"))


def _av():
    try:
        import av
    except ImportError as err:
        raise ImportError(f"decoding UCF-101 videos needs PyAV ({err}): pip install neuroplastic[video]") from None
    return av


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights that average each output pixel's share of the input (area resampling).

    Output pixel ``i`` covers input interval ``[i, i + 1) * n_in / n_out``; partly covered input
    pixels count by the covered fraction, so every row sums to 1 and any ratio works.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return (overlap / (n_in / n_out)).astype(np.float32)


class Clips(LazyArray):
    """The first ``frames`` frames of video files, decoded when indexed: ``(n, frames, rows, cols)``."""

    def __init__(self, files, frames: int, size: tuple[int, int], rates):
        super().__init__(len(files), (frames, *size))
        self.files = tuple(str(f) for f in files)
        self.rates = np.asarray(rates, dtype=np.float64)

    def _read(self, index: np.ndarray) -> np.ndarray:
        av = _av()
        frames, rows, cols = self.sample_shape
        out = np.empty((len(index), frames, rows, cols), self.dtype)
        resize = {}
        for k, i in enumerate(index):
            got = 0
            try:
                with av.open(self.files[i]) as container:
                    for frame in container.decode(video=0):
                        g = frame.to_ndarray(format="gray").astype(np.float32) / np.float32(255)
                        if g.shape not in resize:
                            resize[g.shape] = (area_matrix(g.shape[0], rows), area_matrix(g.shape[1], cols).T)
                        ry, rx = resize[g.shape]
                        out[k, got] = ry @ g @ rx
                        got += 1
                        if got == frames:
                            break
            except av.error.FFmpegError as err:
                raise DataError(self.files[i], f"cannot decode the video ({err})") from None
            if got < frames:
                raise DataError(self.files[i], f"decoded {got} frames, expected at least {frames} (the header "
                                "promised enough)")
        return np.clip(out, 0.0, 1.0, out=out)   # the weights sum to 1 only up to float32 rounding


def _lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    return [(n, line.split()) for n, line in enumerate(read_text(path, what).splitlines(), 1) if line.strip()]


def _class_index(path: Path) -> tuple[str, ...]:
    names = []
    for n, parts in _lines(path, "'<index> <ClassName>' lines, 1..101"):
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise DataError(path, f"line {n} = {' '.join(parts)!r}: expected '{len(names) + 1} <ClassName>'")
        names.append(parts[1])
    if not names:
        raise DataError(path, "no classes (expected '<index> <ClassName>' lines, 1..101)")
    return tuple(names)


def load(path, split: str = "train1", label: str = "class", seed: int = 0, frames: int = 16,
         size: tuple[int, int] = (32, 32), **_) -> Dataset:
    """UCF-101 ``split`` from ``path`` (holding ``UCF-101/`` and ``ucfTrainTestlist/``): grey clips, lazily."""
    if split not in SPLITS:
        raise ValueError(f"unknown UCF-101 split {split!r}; allowed: {', '.join(SPLITS)}")
    if frames < 1 or len(size) != 2 or min(size) < 1:
        raise ValueError(f"frames = {frames}, size = {size}: need frames >= 1 and size = (rows, cols) >= 1")
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "directory not found (expected the directory holding UCF-101/ and ucfTrainTestlist/)")
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    for d in (videos, lists):
        if not d.is_dir():
            raise DataError(d, f"directory not found (expected UCF-101/ and ucfTrainTestlist/ in {root})")
    classes = _class_index(lists / "classInd.txt")
    lookup = {c: k for k, c in enumerate(classes)} | {c.lower(): k for k, c in enumerate(classes)}
    kind, number = split[:-1], split[-1]
    list_path = lists / f"{kind}list0{number}.txt"
    form = "'<Class>/<clip>.avi <class index>'" if kind == "train" else "'<Class>/<clip>.avi'"
    av = _av()
    files, labels, rates = [], [], []
    for n, parts in _lines(list_path, f"{form} lines"):
        rel = parts[0]
        cls = lookup.get(rel.split("/")[0], lookup.get(rel.split("/")[0].lower()))
        if len(parts) != (2 if kind == "train" else 1) or "/" not in rel or cls is None:
            raise DataError(list_path, f"line {n} = {' '.join(parts)!r}: expected {form} with a class of classInd.txt")
        if kind == "train" and parts[1] != str(cls + 1):
            raise DataError(list_path, f"line {n} = {' '.join(parts)!r}: index {parts[1]} but {rel.split('/')[0]} is "
                            f"class {cls + 1} in classInd.txt")
        f = inside(videos, rel, list_path, n)
        if not f.is_file():
            raise DataError(f, f"video not found (listed on line {n} of {list_path.name})")
        try:
            with av.open(str(f)) as container:
                stream = container.streams.video[0]
                rate, count = float(stream.average_rate or stream.guessed_rate or 0), stream.frames
        except (av.error.FFmpegError, IndexError) as err:
            raise DataError(f, f"cannot open the video ({err or 'no video stream'}); expected an AVI clip") from None
        if count and count < frames:
            continue
        files.append(f)
        labels.append(cls)
        rates.append(rate)
    if not files:
        raise DataError(list_path, f"no listed clip has at least {frames} frames")
    rate = Counter(rates).most_common(1)[0][0]
    return Dataset("ucf101", Clips(files, frames, tuple(size), rates), np.asarray(labels, dtype=np.int64),
                   classes, "video", rate)


SOURCES = {
    "ucf101": Source(load, "video", "UCF-101 AVI clips (path: the directory holding UCF-101/ and ucfTrainTestlist/); "
                     "first 16 frames, grey 32 x 32, decoded lazily; 101 classes; splits train1..test3",
                     needs_path=True, splits=SPLITS, extra="video"),
}
