"""Built-in speech-like corpus: vowels spoken by synthetic speakers (source-filter synthesis).

Each utterance is a glottal pulse train at the speaker's pitch (with jitter and a slow pitch
drift) filtered by three formant resonators: the vowel sets the formant frequencies, the speaker
scales them by the length of its vocal tract and sets the pitch. So the token (vowel) and the
speaker are both in the sound, as in real speech, and neither is a single frequency. Utterances
have random loudness and a little noise. Generated with numpy/scipy, offline and reproducible.
"""
from __future__ import annotations

import numpy as np

from . import Dataset, Source

__all__ = ["FORMANTS_HZ", "SOURCES", "vowels"]

#: Formant frequencies F1, F2, F3 (Hz) of five vowels of an adult male voice (Peterson & Barney 1952).
FORMANTS_HZ = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
               "o": (570, 840, 2410), "u": (300, 870, 2240)}
BANDWIDTHS_HZ = (90, 110, 170)


def _speakers(n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(pitch Hz, vocal-tract scale) of ``n`` speakers spread from low male to child voices."""
    scale = np.linspace(0.9, 1.25, n)
    pitch = 95 * scale ** 3 * rng.uniform(0.95, 1.05, n)
    return list(zip(pitch, scale))


def _utterance(formants, pitch: float, scale: float, n: int, rate: float,
               rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import lfilter

    t = np.arange(n) / rate
    f0 = pitch * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 2 * np.pi)))
    phase = np.cumsum(f0 * (1 + 0.01 * rng.standard_normal(n))) / rate + rng.uniform()
    source = np.diff(np.floor(phase), prepend=np.floor(phase[0])).astype(float)   # one pulse per period
    x = source
    for f, bw in zip(formants, BANDWIDTHS_HZ):            # cascade of two-pole resonators
        r = np.exp(-np.pi * bw / rate)
        theta = 2 * np.pi * f * scale / rate
        x = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)
    x += 0.02 * np.std(x) * rng.standard_normal(n)
    envelope = np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)          # 20 ms on- and off-ramps
    x *= envelope
    return x / np.max(np.abs(x)) * rng.uniform(0.3, 0.9)


def vowels(label: str = "token", seed: int = 0, speakers: int = 6, repeats: int = 20,
           seconds: float = 0.25, rate: float = 8000.0, **_) -> Dataset:
    """``5 vowels x speakers x repeats`` utterances of ``seconds`` at ``rate`` Hz, in [-1, 1].

    ``label`` is ``"token"`` (which vowel) or ``"speaker"``. The corpus is the same for every
    protocol seed, as a recorded corpus would be.
    """
    rng = np.random.default_rng(20211206)
    n = int(round(seconds * rate))
    voices = _speakers(speakers, rng)
    waves, tokens, who = [], [], []
    for s, (pitch, scale) in enumerate(voices):
        for v, formants in enumerate(FORMANTS_HZ.values()):
            for _ in range(repeats):
                waves.append(_utterance(formants, pitch * rng.uniform(0.93, 1.07), scale, n, rate, rng))
                tokens.append(v)
                who.append(s)
    labels, classes = ((tokens, tuple(FORMANTS_HZ)) if label == "token"
                       else (who, tuple(f"speaker{s}" for s in range(speakers))))
    return Dataset("vowels", np.asarray(waves, dtype=np.float32), np.asarray(labels, dtype=np.int64),
                   classes, domain="sound", rate=rate)


SOURCES = {
    "vowels": Source(vowels, "sound", "5 synthetic vowels x 6 speakers x 20 repeats, 0.25 s at 8 kHz (built in)",
                     labels=("token", "speaker")),
}
