"""Built-in speech and video corpora, and the one glimpse interface shared by images, sounds and clips."""
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.cli import main as cli
from neuroplastic.data import DATASETS, Dataset, Source, load
from neuroplastic.data.speech import FORMANTS_HZ, vowels
from neuroplastic.data.video import DIRECTIONS, moving_shapes
from neuroplastic.protocol import ProtocolError, loads
from neuroplastic.stimuli import glimpse_sequences, time_windows

ROOT = Path(__file__).resolve().parents[1]


def _band_power(waves, rate, lo, hi):
    spectrum = np.abs(np.fft.rfft(waves, axis=-1)) ** 2
    f = np.fft.rfftfreq(waves.shape[-1], 1 / rate)
    return spectrum[:, (f >= lo) & (f < hi)].sum(axis=1).mean() / spectrum.sum(axis=1).mean()


def test_vowels_carry_their_formants():
    ds = vowels(speakers=2, repeats=4)
    assert ds.domain == "sound" and ds.samples.shape == (2 * 5 * 4, 2000) and ds.rate == 8000
    assert np.abs(ds.samples).max() <= 1.0
    names = list(FORMANTS_HZ)
    a, i = (ds.samples[ds.labels == names.index(v)] for v in ("a", "i"))
    # /a/ has a high F1 (730 Hz), /i/ a low F1 (270 Hz) and a high F2 (2290 Hz).
    assert _band_power(a, 8000, 600, 900) > 3 * _band_power(i, 8000, 600, 900)
    assert _band_power(i, 8000, 2100, 2600) > 3 * _band_power(a, 8000, 2100, 2600)


def test_vowels_are_reproducible_and_relabel_by_speaker():
    token, speaker = vowels(speakers=3, repeats=2), vowels(label="speaker", speakers=3, repeats=2)
    np.testing.assert_array_equal(token.samples, speaker.samples)
    assert speaker.classes == ("speaker0", "speaker1", "speaker2")
    assert np.bincount(speaker.labels).tolist() == [10, 10, 10]


def test_moving_shapes_move_one_pixel_per_frame_in_their_direction():
    ds = moving_shapes(per_class=3)
    assert ds.domain == "video" and ds.samples.shape == (4 * 4 * 3, 16, 16, 16)
    steps = list(DIRECTIONS.values())
    for clip, d in zip(ds.samples, ds.labels):
        bright = clip > 0.5
        # Frame f + 1 is frame f shifted by the clip's own step, and by no other direction's.
        match = [np.mean(np.roll(bright[:-1], step, axis=(1, 2)) == bright[1:]) for step in steps]
        assert np.argmax(match) == d and match[d] == 1.0


def test_time_windows_cut_successive_windows_along_time():
    sound = np.arange(2 * 10, dtype=float).reshape(2, 10)
    g = time_windows(sound, window=4, hop=3)
    assert g.positions.ravel().tolist() == [0, 3, 6]
    np.testing.assert_array_equal(g.patches[1, 2], sound[1, 6:10])
    clip = np.random.default_rng(0).random((3, 6, 2, 5))
    g = time_windows(clip, window=2, hop=2)
    assert g.patches.shape == (3, 3, 2 * 2 * 5)
    np.testing.assert_array_equal(g.patches[2, 1], clip[2, 2:4].ravel())


@pytest.mark.parametrize("window, hop, message", [(11, 1, "longer than the samples"),
                                                  (6, 5, "give 1 glimpse")])
def test_time_windows_reject_too_few_glimpses(window, hop, message):
    with pytest.raises(ValueError, match=message):
        time_windows(np.zeros((2, 10)), window, hop)


class _Stimulus:
    patch, stride, scan = 2, 2, "raster"


@pytest.mark.parametrize("samples, domain, shape", [((4, 6, 6), "image", (4, 9, 4)),
                                                    ((4, 6), "sound", (4, 3, 2)),
                                                    ((4, 6, 3, 3), "video", (4, 3, 18))])
def test_one_glimpse_interface_for_every_domain(samples, domain, shape):
    ds = Dataset("x", np.zeros(samples), np.zeros(4, dtype=int), ("c",), domain=domain)
    assert glimpse_sequences(ds, _Stimulus()).patches.shape == shape


PROTOCOL = 'name = "p"\n[data]\nsource = "vowels"\n{extra}\n'


@pytest.mark.parametrize("key, value, allowed", [("split", "train", "'all'"),
                                                 ("label", "vowel", "'token', 'speaker'")])
def test_protocol_names_the_splits_and_labels_a_source_has(key, value, allowed):
    with pytest.raises(ProtocolError, match=rf"\[data\] {key} = '{value}'.*allowed: {allowed}"):
        loads(PROTOCOL.format(extra=f'{key} = "{value}"'))


def test_a_source_read_from_disk_asks_for_its_path(monkeypatch):
    monkeypatch.setitem(DATASETS, "on_disk", Source(lambda **_: None, "image", "files somewhere",
                                                    needs_path=True))
    with pytest.raises(ValueError, match=r"\[data\] path = .*: on_disk is read from disk"):
        load("on_disk")


@pytest.mark.parametrize("protocol", ["clapp_speech_quick", "clapp_video_quick"])
def test_speech_and_video_protocols_run_from_the_cli(tmp_path, protocol):
    small = ["train.epochs=1", "data.max_samples=64", "model.layers=[8]"]
    rc = cli(["run", str(ROOT / "protocols" / f"{protocol}.toml"), "--quiet", "--out", str(tmp_path),
              *(a for o in small for a in ("--set", o))])
    assert rc == 0
    (run,) = tmp_path.iterdir()
    assert (run / "summary.json").is_file()
