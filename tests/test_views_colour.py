"""Colour images (``[data] colour = "rgb"``) through the hinge rules, dense CLAPP, the budget and the refusals.

* a hinge protocol trains on small files in the real CIFAR format in colour, from the command line, with a
  dense encoder (``h w 3`` inputs) and a conv encoder (3 input channels), and probes every layer; colour
  STL-10 is still read batch by batch;
* dense CLAPP glimpses of colour images are the flattened ``patch x patch x 3`` blocks;
* the memory estimate counts the channels;
* what cannot read colour refuses it before anything is written, naming the file, the key, the source and
  what is allowed: built-in sources and UCF-101, conv CLAPP (grey, as in the paper) and the Brian2 engine.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import set_args
from test_loaders import write_cifar10, write_stl10

from neuroplastic.cli import main
from neuroplastic.data.mapped import RecordFile
from neuroplastic.engines.budget import estimate
from neuroplastic.engines.numpy.learners import TwoViews
from neuroplastic.engines.prepare import prepare
from neuroplastic.errors import ProtocolError
from neuroplastic.protocol import load, loads
from neuroplastic.results import Run

ROOT = Path(__file__).resolve().parents[1]
TANG = ROOT / "protocols" / "tang_e2e_bp_quick.toml"
CLAPP = ROOT / "protocols" / "clapp_digits.toml"


def cifar(tmp_path, *extra):
    """Overrides reading the tiny CIFAR-10 files written under ``tmp_path`` in colour."""
    write_cifar10(tmp_path / "data", per_batch=8)                 # 40 training images of 32 x 32 x 3
    return ['data.source="cifar10"', f'data.path="{tmp_path / "data"}"', 'data.colour="rgb"', *extra]


@pytest.mark.parametrize("arch, first_weights", [("dense", (16, 32 * 32 * 3)), ("small", (32, 3, 3, 3))])
def test_a_hinge_rule_trains_on_colour_cifar_from_the_command_line(tmp_path, arch, first_weights):
    sets = cifar(tmp_path, f'model.arch="{arch}"', *(["model.layers=[16,16]"] if arch == "dense" else []),
                 "train.epochs=2", "train.batch_size=10",
                 "rule.head=8", "stimulus.crop_pad=2", "stimulus.flip=true", "stimulus.blur=1.0")
    protocol = load(TANG, sets)
    prepared = prepare(protocol)
    assert prepared.dataset.samples.shape == (40, 32, 32, 3)
    assert main(["run", str(TANG), "--out", str(tmp_path / "runs"), "--quiet", *set_args(sets)]) == 0
    directory = Run.path_for(tmp_path / "runs", protocol)
    summary = json.loads((directory / "summary.json").read_text())
    assert set(summary["probe"]) == set(summary["probe_random"]) == {"1", "2"}
    with np.load(directory / "checkpoints" / "epoch_0002.npz") as a, \
            np.load(directory / "checkpoints" / "epoch_0000.npz") as initial:
        assert a["param/1/W"].shape == first_weights
        assert not np.array_equal(a["param/1/W"], initial["param/1/W"])                 # it learned
    widths = (16, 16) if arch == "dense" else (32, 64)
    with np.load(directory / "features.npz") as f:
        assert (f["layer1"].shape[1], f["layer2"].shape[1]) == widths


def test_colour_stl10_is_read_batch_by_batch_by_a_hinge_rule(tmp_path):
    write_stl10(tmp_path, train_labels=[1, 2] * 4, n_test=4, n_unlabeled=9, test_labels=[1, 2] * 2)
    sets = [f'data.path="{tmp_path}"', 'data.colour="rgb"', 'model.arch="dense"', 'rule.head_input="mean"',
            "model.layers=[8,8]", "train.epochs=1", "train.batch_size=4", "rule.head=8"]
    path = ROOT / "protocols" / "tang_e2e_bp_stl10_paper.toml"
    prepared = prepare(load(path, sets))
    samples = prepared.dataset.samples
    assert isinstance(samples, RecordFile) and samples.shape == (9, 96, 96, 3)        # never read whole
    assert prepared.probe_set().dataset.samples.shape == (12, 96, 96, 3)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet", *set_args(sets)]) == 0
    directory = Run.path_for(tmp_path / "runs", load(path, sets))
    with np.load(directory / "checkpoints" / "epoch_0001.npz") as a:
        assert a["param/1/W"].shape == (8, 64 * 64 * 3)                                 # 64 x 64 views


def test_the_probe_reads_every_channel(tmp_path):
    """Features of a colour image change when only its blue channel does (dense and conv encoders)."""
    for arch in ("dense", "small"):
        layers = ["model.layers=[16,16]"] if arch == "dense" else []
        protocol = load(TANG, cifar(tmp_path / arch, f'model.arch="{arch}"', *layers, "rule.head=8"))
        prepared = prepare(protocol)
        net = TwoViews(protocol, prepared, np.random.default_rng(0))
        before = net.features(net.params, prepared)
        samples = prepared.dataset.samples.copy()
        samples[:, :, :, 2] = 1.0 - samples[:, :, :, 2]
        after = net.features(net.params, _with_samples(prepared, samples))
        assert before[0].shape == after[0].shape == (40, 1, 16 if arch == "dense" else 32)
        assert not np.allclose(before[0], after[0]), arch


def _with_samples(prepared, samples):
    from neuroplastic.data import Dataset

    ds = prepared.dataset
    return prepared._replace(dataset=Dataset(ds.name, samples, ds.labels, ds.classes, ds.domain, ds.rate, ds.ids))


def test_dense_clapp_glimpses_of_colour_images_are_flattened_blocks(tmp_path):
    sets = cifar(tmp_path, "stimulus.patch=8", "stimulus.stride=8", "model.layers=[8,8]", "train.epochs=1",
                 "train.batch_size=8")
    protocol = load(CLAPP, sets)
    prepared = prepare(protocol)
    patches, images = prepared.stimulus.patches, prepared.dataset.samples
    assert patches.shape == (40, 16, 8 * 8 * 3)
    np.testing.assert_array_equal(patches[3, 5], images[3, 8:16, 8:16].ravel())         # row 1, column 1 of 4 x 4
    assert main(["run", str(CLAPP), "--out", str(tmp_path / "runs"), "--quiet", *set_args(sets)]) == 0
    with np.load(Run.path_for(tmp_path / "runs", protocol) / "checkpoints" / "epoch_0001.npz") as a:
        assert a["param/1/W"].shape == (8, 192)


def test_the_memory_estimate_counts_the_channels(tmp_path):
    def parts(protocol):
        return {p.what: p for p in estimate(protocol, prepare(protocol)).parts}

    base = ['data.source="cifar10"', "rule.head=8"]
    write_cifar10(tmp_path / "data", per_batch=8)
    at = f'data.path="{tmp_path / "data"}"'
    for arch in ("dense", "small"):
        sets = [*base, at, f'model.arch="{arch}"'] + (["model.layers=[16,16]"] if arch == "dense" else [])
        grey = parts(load(TANG, sets))
        rgb = parts(load(TANG, [*sets, 'data.colour="rgb"']))
        assert rgb["data"].bytes == 3 * grey["data"].bytes
        assert rgb["images in the engine's type"].bytes == 3 * grey["images in the engine's type"].bytes
        assert rgb["activations of one batch"].bytes > grey["activations of one batch"].bytes
        first = "16 x 3072 W" if arch == "dense" else "32 x 3 x 3 x 3 W"
        assert first in rgb["parameters"].detail and first not in grey["parameters"].detail
    clapp = parts(load(CLAPP, [base[0], "model.layers=[16,16]", at, 'data.colour="rgb"', "stimulus.patch=8",
                               "stimulus.stride=8"]))
    assert "x 16 glimpses x 192 inputs" in clapp["glimpse sequences"].detail


# -- refusals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol, overrides, key, message", [
    (TANG, ['data.colour="rgb"'], "data.colour",
     "[data] colour = 'rgb': digits holds grey images; allowed with it: 'grey' (sources with 'rgb': cifar10, "
     "cifar100, stl10)"),
    (CLAPP, ['data.source="moving_shapes"', 'data.colour="rgb"'], "data.colour",
     "[data] colour = 'rgb': moving_shapes holds grey clips; allowed with it: 'grey'"),
    (CLAPP, ['data.source="ucf101"', 'data.colour="rgb"'], "data.colour",
     "[data] colour = 'rgb': ucf101 holds grey clips; allowed with it: 'grey'"),
])
def test_sources_without_colour_refuse_rgb_at_the_command_line(tmp_path, capsys, protocol, overrides, key, message):
    with pytest.raises(ProtocolError) as err:
        load(protocol, overrides)
    assert err.value.key == key and message in str(err.value)
    assert main(["run", str(protocol), "--out", str(tmp_path / "runs"), *set_args(overrides)]) == 2
    out = capsys.readouterr().err
    assert str(protocol) in out and message in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_probe_data_must_have_colour_too(tmp_path):
    with pytest.raises(ProtocolError, match=r"\[evaluate\] source = 'digits': the probe reads its data in \[data\] "
                                            r"colour = 'rgb', and digits holds grey images") as err:
        load(TANG, cifar(tmp_path, 'evaluate.source="digits"'))
    assert err.value.key == "evaluate.source"


@pytest.mark.parametrize("protocol, overrides, key, message", [
    (ROOT / "protocols" / "clapp_s_conv_quick.toml", [], "data.colour",
     r"\[data\] colour = 'rgb': convolutional CLAPP \(\[model\] arch = 'small'\) cuts its patch grids from grey "
     r"images, as in the paper; allowed with it: 'grey'"),
    (ROOT / "protocols" / "clapp_digits_brian.toml", ['engine.device="runtime"'], "data.colour",
     r"\[data\] colour = 'rgb': the Brian2 engine simulates grey glimpses .*; allowed: 'grey'"),
])
def test_conv_clapp_and_brian_refuse_colour_before_writing(tmp_path, capsys, protocol, overrides, key, message):
    sets = cifar(tmp_path, *overrides)
    with pytest.raises(ProtocolError, match=message) as err:
        prepare(load(protocol, sets))
    assert err.value.key == key
    assert main(["run", str(protocol), "--out", str(tmp_path / "runs"), *set_args(sets)]) == 2
    assert str(protocol) in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_grey_keeps_the_run_identity_and_rgb_changes_it():
    minimal = loads('name = "x"')
    assert minimal.data.colour == "grey" and minimal.as_dict()["data"]["colour"] == "grey"
    assert "colour" not in minimal.identity()["protocol"]["data"]           # runs made before the key keep their names
    assert loads('name = "x"\n[data]\ncolour = "grey"').digest() == minimal.digest()
    cifar10 = 'name = "x"\n[data]\nsource = "cifar10"\n'
    assert loads(cifar10 + 'colour = "rgb"').digest() != loads(cifar10).digest()
    with pytest.raises(ProtocolError, match=r"\[data\] colour = \"RGB\": must be one of 'grey', 'rgb'"):
        loads('name = "x"\n[data]\ncolour = "RGB"')
