"""Data sets, chosen by a protocol's ``[data] source``: built-in ones that work offline, and
loaders for the papers' data sets in their published formats (``[data] path``).

Every source returns a :class:`Dataset` of one *domain*, whose samples the stimulus module turns
into glimpse sequences without knowing where they came from:

=========  ==============================  ==========================================
domain     one sample                      a glimpse (``[stimulus] patch``, ``stride``)
=========  ==============================  ==========================================
``image``  grey image (height, width),     a patch x patch square on a grid
           or colour (height, width, 3)
``sound``  waveform (length,)              a window of ``patch`` samples
``video``  grey clip (frames, height, w)   a block of ``patch`` frames
=========  ==============================  ==========================================

Images are grey unless ``[data] colour = "rgb"`` asks a source that has colour (:attr:`Source.colours`)
for its three channels, channels last. Labels are used only by the linear probe, never by learning.
Loaders know no engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError, SettingError

__all__ = ["COLOURS", "DATASETS", "DOMAINS", "DataError", "Dataset", "Source", "colour_problem", "load"]

DOMAINS = ("image", "sound", "video")
#: What ``[data] colour`` may ask for: grey levels (ITU-R BT.601 luma) or the red, green and blue channels.
COLOURS = ("grey", "rgb")


def _os_reason(err: OSError) -> str:
    """``"permission denied"``, ``"is a directory"``, ...: why a file could not be read, in words."""
    if isinstance(err, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return (err.strerror or type(err).__name__).lower()


def check_file(path, expected: str) -> Path:
    """``path`` if it is a regular file this process can open, else a :class:`DataError` saying why.

    ``expected`` says what the file should hold (``"the 10 STL-10 class names, one per line"``).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"is a directory, expected a file ({expected})")
    if not path.is_file():
        raise DataError(path, f"file not found (expected {expected})")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise DataError(path, f"cannot read: {_os_reason(err)} (expected {expected})") from None
    return path


def read_text(path, expected: str) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is a :class:`DataError` naming it.

    A byte-order mark is dropped; line ends are left to ``str.splitlines``.
    """
    path = check_file(path, expected)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read: {_os_reason(err)} (expected {expected})") from None
    except MemoryError:
        raise DataError(path, f"too large to read into memory (expected {expected})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(path, f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} (line {line}); "
                        f"expected {expected}") from None


def list_dir(path) -> list[Path]:
    """The entries of directory ``path``; one that cannot be listed is a :class:`DataError` naming it."""
    path = Path(path)
    try:
        return sorted(path.iterdir())
    except OSError as err:
        raise DataError(path, f"cannot list the directory: {_os_reason(err)}") from None


def inside(root, relative: str, source, line: int) -> Path:
    """``root / relative``, refused unless it lies inside ``root`` once resolved (``..``, absolute paths, links).

    ``source`` and ``line`` name where ``relative`` was read (a list file), for the :class:`DataError`.
    """
    root = Path(root)
    path = root / relative
    try:
        ok = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):     # a link loop, an embedded NUL
        ok = False
    if not ok:
        raise DataError(source, f"line {line}: entry {relative!r} leads outside the data directory {root}; "
                        "expected a path relative to it (no '..', no absolute path, no link out of it)")
    return path


@dataclass(frozen=True)
class Dataset:
    """Samples of one domain with integer labels and the class names.

    ``samples`` is an ``(n, *sample_shape)`` float array, or an array-like over a memory map
    (``len``, ``shape`` and indexing by int, slice or index array, returning float arrays) for
    data sets too large to hold in memory. Images are grey ``(h, w)`` or colour ``(h, w, 3)`` (channels
    last) in [0, 1], video grey in [0, 1], sound in [-1, 1].
    ``rate`` is the sampling rate of sound (Hz) or the frame rate of video (frames/s).
    ``ids`` is each sample's index in the source's full data (``None``: ``0 .. n-1``); a
    ``[data] max_samples`` subset keeps the ids of the samples it kept, so that two runs that kept
    different subsets can pair their features sample by sample (:attr:`sample_ids`).
    """

    name: str
    samples: Any
    labels: np.ndarray
    classes: tuple[str, ...]
    domain: str = "image"
    rate: float = 0.0
    ids: np.ndarray | None = None

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; known: {', '.join(DOMAINS)}")
        if len(self.samples) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.samples)} samples but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_ids(self) -> np.ndarray:
        """Each sample's index in the source's full data (int64)."""
        return np.arange(len(self), dtype=np.int64) if self.ids is None else np.asarray(self.ids, dtype=np.int64)

    def subset(self, index) -> "Dataset":
        """The samples at ``index`` (read into memory), same metadata; their ids are kept."""
        index = np.asarray(index)
        return Dataset(self.name, np.asarray(self.samples[index]), self.labels[index], self.classes,
                       self.domain, self.rate, self.sample_ids[index])

    def batches(self, size: int):
        """Iterate ``(samples, labels)`` in order, ``size`` at a time: one pass reads each sample once."""
        for start in range(0, len(self), size):
            yield np.asarray(self.samples[start:start + size]), self.labels[start:start + size]


@dataclass(frozen=True)
class Source:
    """A named data set: how to load it and which ``[data]`` settings it accepts.

    ``load(path=, split=, label=, seed=)`` returns a :class:`Dataset`. ``splits`` and ``labels``
    list the allowed ``[data] split`` and ``[data] label`` values (the first is the default);
    ``needs_path`` says whether ``[data] path`` must point to the files on disk. ``colours`` lists
    the ``[data] colour`` values it offers; a source with more than ``"grey"`` also takes ``colour=``.
    """

    load: Callable[..., Dataset]
    domain: str
    doc: str
    needs_path: bool = False
    splits: tuple[str, ...] = ("all",)
    labels: tuple[str, ...] = ("class",)
    extra: str = ""      # the pip extra a loader needs, named in its import error
    colours: tuple[str, ...] = ("grey",)


#: Every data source by name (``[data] source``), filled from the domain modules below.
DATASETS: dict[str, Source] = {}


def colour_problem(source: str, colour: str) -> str | None:
    """Why ``source`` cannot give ``[data] colour = colour``, naming what it allows and which sources do; ``None``
    if it can."""
    src = DATASETS[source]
    if colour in src.colours:
        return None
    coloured = ", ".join(sorted(n for n, s in DATASETS.items() if colour in s.colours)) or "none"
    holds = ({"image": "grey images", "video": "grey clips"}.get(src.domain, src.domain) if src.colours == ("grey",)
             else f"{' or '.join(src.colours)} images")
    return (f"{source} holds {holds}; allowed with it: {', '.join(map(repr, src.colours))} "
            f"(sources with {colour!r}: {coloured})")


def load(source: str, path: str = "", split: str = "", label: str = "", max_samples: int = 0,
         seed: int = 0, colour: str = "grey") -> Dataset:
    """Load ``source``; empty ``split``/``label`` take the source's default, ``colour`` is one of its ``colours``.

    ``max_samples > 0`` keeps a random subset of that size (in sample order), read into memory.
    Raises :class:`DataError` for files that are missing or malformed, :class:`SettingError` for
    settings the source does not accept.
    """
    try:
        src = DATASETS[source]
    except KeyError:
        raise SettingError("data.source", f"unknown data source {source!r}; known: {', '.join(sorted(DATASETS))}") from None
    split = split or src.splits[0]
    label = label or src.labels[0]
    if split not in src.splits:
        raise SettingError("data.split", f"[data] split = {split!r} is not a split of {source}; allowed: {', '.join(src.splits)}")
    if label not in src.labels:
        raise SettingError("data.label", f"[data] label = {label!r} is not a labelling of {source}; allowed: {', '.join(src.labels)}")
    if (problem := colour_problem(source, colour)) is not None:
        raise SettingError("data.colour", f"[data] colour = {colour!r}: {problem}")
    if src.needs_path and not str(path):
        raise SettingError("data.path", f"[data] path = '': {source} is read from disk; set it to the directory "
                         f"holding the data set ({src.doc})")
    in_colour = {"colour": colour} if len(src.colours) > 1 else {}
    ds = src.load(path=path, split=split, label=label, seed=seed, **in_colour)
    if max_samples and max_samples < len(ds):
        keep = np.sort(np.random.default_rng(seed).permutation(len(ds))[:max_samples])
        ds = ds.subset(keep)
    return ds


# The domain modules import Dataset and Source from here, so they are registered last.
from . import cifar, images, librispeech, speech, stl10, ucf101, video  # noqa: E402

for _module in (images, speech, video, stl10, cifar, librispeech, ucf101):
    DATASETS.update(_module.SOURCES)
