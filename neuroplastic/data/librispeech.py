"""LibriSpeech (Panayotov et al. 2015) as published: FLAC utterances of read English, 16 kHz.

Layout: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter (lines ``<utterance id> TRANSCRIPT``). ``SPEAKERS.TXT``
and the other metadata files at the root are not needed.

A sample is a fixed-length window of an utterance, float32 in [-1, 1]: the first ``seconds`` of
each utterance, or up to ``segments`` consecutive non-overlapping windows of it (0 = as many as fit),
so that every sample has the same length. Utterances shorter than ``seconds`` give no sample
(LibriSpeech utterances last 1-35 s, so few are lost at the default 1 s). The label is the speaker
(or the chapter); classes are the ids as strings, in numeric order.

Loading reads only the FLAC headers (to check the rate and the length); the audio is decoded when
samples are indexed (:class:`Utterances`), so a ``[data] max_samples`` subset decodes only itself.
Every transcript is parsed and matched to the audio files; the text of each sample's utterance is
in ``dataset.samples.transcripts``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import Dataset, DataError, Source, list_dir, read_text
from .mapped import LazyArray

__all__ = ["RATE", "SOURCES", "SPLITS", "Utterances", "librispeech_dir", "load"]

RATE = 16000
SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360",
          "train-other-500")
_UTTERANCE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError) as err:   # OSError: the wheel's libsndfile cannot be loaded
        raise ImportError(f"reading LibriSpeech FLAC files needs soundfile ({err}): "
                          "pip install neuroplastic[audio]") from None
    return soundfile


class Utterances(LazyArray):
    """Fixed-length windows of FLAC files, decoded when indexed: ``(n, length)`` float32 in [-1, 1].

    ``files[i]`` and ``starts[i]`` say where sample ``i`` is read from; ``utterances[i]`` and
    ``transcripts[i]`` name its utterance and what is said in it.
    """

    def __init__(self, files, starts, length: int, utterances, transcripts):
        super().__init__(len(files), (length,))
        self.files = tuple(str(f) for f in files)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.utterances = tuple(utterances)
        self.transcripts = tuple(transcripts)

    def _read(self, index: np.ndarray) -> np.ndarray:
        sf = _soundfile()
        length = self.sample_shape[0]
        out = np.empty((len(index), length), self.dtype)
        for k, i in enumerate(index):
            try:
                x = sf.read(self.files[i], frames=length, start=int(self.starts[i]), dtype="float32",
                            always_2d=True)[0]
            except Exception as err:   # soundfile raises its own LibsndfileError, RuntimeError, OSError
                raise DataError(self.files[i], f"cannot decode the FLAC file ({err})") from None
            if x.shape != (length, 1):
                raise DataError(self.files[i], f"decoded {x.shape[0]} samples x {x.shape[1]} channels from "
                                f"sample {self.starts[i]}, expected {length} x 1 (file changed since loading?)")
            out[k] = x[:, 0]
        return out


def librispeech_dir(path) -> Path:
    """The ``LibriSpeech`` root: ``path`` itself or its child of that name."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(p, "directory not found (expected the 'LibriSpeech' directory or its parent)")
    return p / "LibriSpeech" if (p / "LibriSpeech").is_dir() else p


def _transcripts(path: Path, speaker: str, chapter: str) -> dict[str, str]:
    expected = (f"'<utterance id> TRANSCRIPT' lines for the utterances of chapter {chapter} of speaker "
                f"{speaker}")
    if not path.exists():
        raise DataError(path, f"transcript file not found (expected {expected})")
    out = {}
    for number, line in enumerate(read_text(path, expected).splitlines(), 1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        m = _UTTERANCE.match(utt)
        if not m or m.group(1, 2) != (speaker, chapter) or not text.strip():
            raise DataError(path, f"line {number} = {line.strip()[:60]!r}: expected "
                            f"'{speaker}-{chapter}-<utt> TRANSCRIPT'")
        out[utt] = text.strip()
    return out


def _numeric(names):
    return sorted(names, key=lambda s: (len(s), s))


def load(path, split: str = "dev-clean", label: str = "speaker", seed: int = 0, seconds: float = 1.0,
         segments: int = 1, **_) -> Dataset:
    """LibriSpeech ``split`` from ``path`` (``LibriSpeech`` or its parent): ``seconds``-long windows, lazily."""
    if split not in SPLITS:
        raise ValueError(f"unknown LibriSpeech split {split!r}; allowed: {', '.join(SPLITS)}")
    if label not in ("speaker", "chapter"):
        raise ValueError(f"unknown LibriSpeech label {label!r}; allowed: speaker, chapter")
    length = int(round(seconds * RATE))
    if length < 1 or segments < 0:
        raise ValueError(f"seconds = {seconds} and segments = {segments}: need seconds >= 1/{RATE} and segments >= 0")
    root = librispeech_dir(path)
    sub = root / split
    if not sub.is_dir():
        found = [s for s in SPLITS if (root / s).is_dir()]
        raise DataError(sub, f"split not found; splits in {root}: {', '.join(found) or 'none'} "
                        f"(expected LibriSpeech/<split>/<speaker>/<chapter>/*.flac)")
    sf = _soundfile()
    files, starts, utts, texts, speakers, chapters = [], [], [], [], [], []
    for spk_dir in _numeric([d.name for d in list_dir(sub) if d.is_dir()]):
        for ch_dir in _numeric([d.name for d in list_dir(sub / spk_dir) if d.is_dir()]):
            folder = sub / spk_dir / ch_dir
            trans_path = folder / f"{spk_dir}-{ch_dir}.trans.txt"
            trans = _transcripts(trans_path, spk_dir, ch_dir)
            flacs = {f.stem: f for f in list_dir(folder) if f.suffix == ".flac"}
            unlisted, missing = sorted(set(flacs) - set(trans)), sorted(set(trans) - set(flacs))
            if unlisted:
                raise DataError(flacs[unlisted[0]], f"utterance {unlisted[0]} has no line in {trans_path.name}")
            if missing:
                raise DataError(folder / f"{missing[0]}.flac", f"file not found (listed in {trans_path.name})")
            for utt in sorted(trans):
                f = flacs[utt]
                try:
                    info = sf.info(str(f))
                except Exception as err:
                    raise DataError(f, f"cannot read the FLAC header ({err})") from None
                if info.samplerate != RATE:
                    raise DataError(f, f"sample rate {info.samplerate} Hz, expected {RATE} Hz (LibriSpeech is "
                                    "16 kHz)")
                if info.channels != 1:
                    raise DataError(f, f"{info.channels} channels, expected 1 (LibriSpeech is mono)")
                fit = info.frames // length
                for s in range(fit if segments == 0 else min(fit, segments)):
                    files.append(f)
                    starts.append(s * length)
                    utts.append(utt)
                    texts.append(trans[utt])
                    speakers.append(spk_dir)
                    chapters.append(f"{spk_dir}-{ch_dir}")
    if not files:
        raise DataError(sub, f"no utterance of at least {seconds} s (expected <speaker>/<chapter>/*.flac with "
                        "a .trans.txt per chapter)")
    names = speakers if label == "speaker" else chapters
    classes = tuple(dict.fromkeys(names))          # already in numeric order
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    samples = Utterances(files, starts, length, utts, texts)
    return Dataset("librispeech", samples, labels, classes, "sound", float(RATE))


SOURCES = {
    "librispeech": Source(load, "sound", "LibriSpeech FLAC (path: LibriSpeech/ or its parent); the first 1 s of each "
                          "utterance at 16 kHz, decoded lazily; label = speaker or chapter",
                          needs_path=True, splits=SPLITS, labels=("speaker", "chapter"), extra="audio"),
}
