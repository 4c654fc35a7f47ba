"""ON/OFF inputs (``[stimulus] onoff``): signed glimpses (sound) reach a spiking network as two spike rates.

* each value x becomes ON [x]+ and OFF [-x]+ (x = ON - OFF), for the rate and the spiking variants alike;
* a spiking network refuses glimpses with negative values (their negative part would be lost without a
  word), naming the file and the key, before anything is written;
* the speech protocol at scale (``clapp_speech_spiking``): 256 inputs, more than a million plastic synapses,
  and a small version of it runs in both variants on one stream, with spikes in every layer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import set_args

from neuroplastic.cli import main
from neuroplastic.engines.prepare import prepare
from neuroplastic.errors import ProtocolError
from neuroplastic.protocol import load
from neuroplastic.stimuli import on_off

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "protocols" / "clapp_speech_spiking.toml"
#: clapp_speech_spiking at a size the Brian2 runtime device simulates in seconds.
SMALL = ["data.max_samples=40", "model.layers=[6, 4, 4]", "stimulus.glimpse_ms=10", "engine.dt_ms=0.5",
         "engine.chunk_glimpses=0"]


def test_on_off_splits_every_value_into_two_non_negative_rates():
    x = np.random.default_rng(0).standard_normal((5, 3, 7))
    y = on_off(x)
    assert y.shape == (5, 3, 14) and y.min() >= 0
    np.testing.assert_array_equal(y[..., :7] - y[..., 7:], x)
    assert np.all((y[..., :7] == 0) | (y[..., 7:] == 0))        # never both


def test_the_speech_protocol_has_256_inputs_and_a_million_plastic_synapses():
    protocol = load(SPEECH)
    prepared = prepare(protocol, running=False)
    patches = prepared.stimulus.patches
    assert patches.shape[-1] == 2 * protocol.stimulus.patch == 256 and patches.min() >= 0
    sizes = [patches.shape[-1], *protocol.model.layers]
    w = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    w_pred = sum(n * n for n in sizes[1:])
    assert (w, w_pred) == (655_360, 786_432) and w + w_pred > 10**6


def test_a_spiking_network_refuses_negative_glimpses_before_writing(tmp_path, capsys):
    sets = [*SMALL, "stimulus.onoff=false"]
    with pytest.raises(ProtocolError, match=r"\[stimulus\] onoff = false: the spiking input codes each glimpse value "
                                            r"as a spike rate, and the glimpses of vowels go down to -0\.") as err:
        prepare(load(SPEECH, sets), running=False)
    assert err.value.key == "stimulus.onoff"
    args = ["run", str(SPEECH), "--device", "runtime", "--out", str(tmp_path / "runs")]
    assert main([*args, *set_args(sets)]) == 2
    assert f"{SPEECH.name}: [stimulus] onoff = false" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    prepare(load(SPEECH, [*sets, 'engine.variant="rate"']), running=False)       # the rate network reads signs


def test_conv_clapp_refuses_on_off_inputs():
    with pytest.raises(ProtocolError, match=r"\[stimulus\] onoff = true: ON/OFF inputs split dense glimpses"):
        prepare(load(ROOT / "protocols" / "clapp_s_conv_quick.toml", ["stimulus.onoff=true"]))


def test_a_small_speech_network_runs_both_variants_on_one_stream(tmp_path, capsys):
    monitors = {}
    for variant in ("rate", "spiking"):
        sets = [*SMALL, f'engine.variant="{variant}"']
        rc = main(["run", str(SPEECH), "--device", "runtime", "--out", str(tmp_path / variant), "--quiet",
                   *set_args(sets)])
        assert rc == 0, capsys.readouterr().err
        (run,) = (tmp_path / variant).iterdir()
        monitors[variant] = np.load(run / "brian_monitors.npz")
        if variant == "spiking":
            spikes = np.load(run / "brian_spikes.npz")
            assert all(len(spikes[f"layer{l}/i"]) > 0 for l in (1, 2, 3))
    for key in ("image", "position", "y"):
        np.testing.assert_array_equal(monitors["rate"][key], monitors["spiking"][key])


def test_the_numpy_engine_reads_on_off_inputs(tmp_path):
    sets = ["stimulus.onoff=true", "train.epochs=1", "data.max_samples=60", "model.layers=[8, 8]"]
    protocol = load(ROOT / "protocols" / "clapp_speech_quick.toml", sets)
    assert prepare(protocol).stimulus.patches.shape[-1] == 256
    args = ["run", str(ROOT / "protocols" / "clapp_speech_quick.toml"), "--out", str(tmp_path), "--quiet"]
    assert main([*args, *set_args(sets)]) == 0
    (run,) = tmp_path.iterdir()
    with np.load(run / "checkpoints" / "epoch_0001.npz") as a:
        assert a["param/1/W"].shape == (8, 256)
