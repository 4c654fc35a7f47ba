"""Convolutional CLAPP through the numpy engine, patch grids cut batch by batch, and probes on their own data.

* :class:`PatchGrids` crops and cuts exactly the windows it says (centre for the probe, random for training),
  reads only the images asked for, and gives them back in the order asked;
* a conv protocol runs from the command line, probes every conv layer, and resumes bit-identically;
* the paper-size protocols run end to end (shrunk by ``--set``) on small files in the real STL-10 and
  CIFAR formats, training on one split and probing on others;
* settings an engine cannot honour are refused, naming the key and what is allowed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_loaders import write_cifar10, write_cifar100, write_stl10

from neuroplastic.cli import main
from neuroplastic.engines.prepare import prepare
from neuroplastic.protocol import ProtocolError, load, loads
from neuroplastic.results import Run
from neuroplastic.stimuli import PatchGrids, patch_grid
from helpers import assert_cli_resume_is_bit_identical

ROOT = Path(__file__).resolve().parents[1]
CONV_QUICK = ROOT / "protocols" / "clapp_s_conv_quick.toml"
TINY = ["data.max_samples=96", "train.epochs=3", "train.batch_size=16"]


class CountingArray:
    """An (n, h, w) array that records which samples were read (stands in for a lazily read file)."""

    def __init__(self, array):
        self.array, self.read = array, []
        self.shape = array.shape

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        index = np.asarray(index)
        self.read += index.tolist()
        return self.array[index]


def test_patch_grids_centre_crop_for_the_probe():
    images = np.random.default_rng(0).random((5, 20, 22)).astype(np.float32)
    grids = PatchGrids(images, patch=6, stride=3, crop=12)
    assert grids.grid_shape == (3, 3)
    x = grids.batch([4, 1])
    np.testing.assert_array_equal(x, patch_grid(images[[4, 1], 4:16, 5:17], 6, 3)[..., 0])
    np.testing.assert_array_equal(x[0, 2, 1], images[4, 4 + 6:4 + 12, 5 + 3:5 + 9])
    chunks = list(grids.chunks(size=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(chunks), grids.batch(np.arange(5)))


def test_patch_grids_random_crops_are_windows_of_their_own_image():
    rng = np.random.default_rng(1)
    images = rng.random((6, 16, 16))
    grids = PatchGrids(images, patch=4, stride=4, crop=8, dtype="float64")
    corners = set()
    for _ in range(20):
        x = grids.batch([3, 0], rng)                           # (2, 2, 2, 4, 4)
        for k, i in enumerate([3, 0]):
            crop = np.block([[x[k, 0, 0], x[k, 0, 1]], [x[k, 1, 0], x[k, 1, 1]]])
            found = [(t, l) for t in range(9) for l in range(9) if np.array_equal(images[i, t:t + 8, l:l + 8], crop)]
            assert len(found) == 1
            corners.add(found[0])
    assert len(corners) > 10                                   # crops move around the image


def test_patch_grids_mirror_training_images_at_random_and_normalise_every_image():
    images = np.random.default_rng(2).random((40, 16, 16))
    plain = PatchGrids(images, patch=4, stride=4, crop=8, dtype="float64")
    grids = PatchGrids(images, patch=4, stride=4, crop=8, dtype="float64", flip=True, mean=0.4, std=0.25)
    index = np.arange(40)
    x, ref = grids.batch(index, np.random.default_rng(3)), plain.batch(index, np.random.default_rng(3))
    # the crops are drawn first, so each image is its unmirrored crop, or that crop mirrored (the grid's
    # columns reversed and every patch mirrored), normalised
    kept = [np.allclose(x[k], (ref[k] - 0.4) / 0.25) for k in index]
    mirrored = [np.allclose(x[k], (ref[k][:, ::-1, :, ::-1] - 0.4) / 0.25) for k in index]
    assert all(a != b for a, b in zip(kept, mirrored))
    assert 10 < sum(mirrored) < 30                             # about half
    # the probe's images (no generator) are centred, normalised and never mirrored
    np.testing.assert_allclose(grids.batch(index), (plain.batch(index) - 0.4) / 0.25)


def test_paper_protocols_use_the_authors_input_pipeline_and_patch_score():
    for name in ("clapp_s_stl10_paper", "clapp_stl10_paper"):
        p = load(ROOT / "protocols" / f"{name}.toml")
        assert (p.stimulus.flip, p.stimulus.mean, p.stimulus.std, p.rule.score) == (True, 0.412, 0.257, "patch")


def test_patch_grids_read_only_the_batch():
    images = CountingArray(np.arange(8 * 10 * 10, dtype=np.float32).reshape(8, 10, 10))
    grids = PatchGrids(images, patch=5, stride=5)
    x = grids.batch([6, 2, 5])
    assert sorted(images.read) == [2, 5, 6]
    np.testing.assert_array_equal(x[:, 0, 0], images.array[[6, 2, 5], :5, :5])      # in the order asked


def test_patch_grids_errors():
    images = np.zeros((3, 16, 16))
    with pytest.raises(ValueError, match=r"crop = 20 is larger than the images \(16 x 16\)"):
        PatchGrids(images, 4, 2, crop=20)
    with pytest.raises(ValueError, match=r"patch = 10 is larger than the crops \(8 x 8\)"):
        PatchGrids(images, 10, 2, crop=8)
    with pytest.raises(ValueError, match="1 row"):
        PatchGrids(images, 12, 8)
    with pytest.raises(ValueError, match="grey images"):
        PatchGrids(np.zeros((3, 16)), 4, 2)


def test_conv_protocol_runs_probes_every_layer_and_resumes_bit_identically(tmp_path):
    directory, summary = assert_cli_resume_is_bit_identical(CONV_QUICK, TINY, tmp_path, epochs=3)
    assert set(summary["probe"]) == set(summary["probe_random"]) == {"1", "2"}
    with np.load(directory / "checkpoints" / "epoch_0000.npz") as first, \
            np.load(directory / "checkpoints" / "epoch_0003.npz") as last:
        assert first["param/1/W"].shape == (32, 3, 3, 1) and first["param/2/W"].shape == (64, 3, 3, 32)
        assert not np.array_equal(first["param/1/W"], last["param/1/W"])
    with np.load(directory / "features.npz") as f:
        assert f["layer1"].shape == (len(f["labels"]), 32) and f["layer2"].shape[1] == 64


def test_clapp_stl10_paper_protocol_trains_on_unlabeled_and_probes_train_test(tmp_path):
    train_labels = [1, 2] * 6
    write_stl10(tmp_path / "data", train_labels=train_labels, n_test=6, n_unlabeled=10, test_labels=[1, 2] * 3)
    shrink = ['data.path="data"', 'model.arch="small"', "train.epochs=1", "train.batch_size=4"]
    protocol = load(ROOT / "protocols" / "clapp_s_stl10_paper.toml", shrink[1:] + [
        f'data.path="{tmp_path / "data"}"'])
    prepared = prepare(protocol)
    assert len(prepared.train_idx) == 10 and prepared.stimulus.grid_shape == (7, 7)
    probe = prepared.probe_set()
    assert probe.train_idx.tolist() == list(range(12)) and probe.test_idx.tolist() == list(range(12, 18))
    assert probe.dataset.labels.tolist() == [l - 1 for l in train_labels] + [0, 1] * 3
    sets = [a for o in shrink[1:] + [f'data.path="{tmp_path / "data"}"'] for a in ("--set", o)]
    assert main(["run", str(ROOT / "protocols" / "clapp_s_stl10_paper.toml"), "--out", str(tmp_path / "runs"),
                 "--quiet", *sets]) == 0
    summary = json.loads((Run.path_for(tmp_path / "runs", protocol) / "summary.json").read_text())
    assert set(summary["probe"]) == {"1", "2"}


def test_tang_paper_protocol_trains_on_cifar100_and_probes_cifar10(tmp_path):
    write_cifar100(tmp_path, fine=list(range(12)), coarse=[0] * 12)
    write_cifar10(tmp_path, per_batch=4)
    sets = [f'data.path="{tmp_path}"', "train.epochs=2", "train.batch_size=6"]
    path = ROOT / "protocols" / "tang_gll_bp_cifar_paper.toml"
    prepared = prepare(load(path, sets))
    assert prepared.dataset.name == "cifar100" and len(prepared.train_idx) == 12
    probe = prepared.probe_set()
    assert probe.dataset.name == "cifar10" and (len(probe.train_idx), len(probe.test_idx)) == (20, 4)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet",
                 *(a for o in sets for a in ("--set", o))]) == 0


@pytest.mark.parametrize("data", ["cifar", "stl10"])
def test_tang_dtp_paper_protocols_train_their_conv_encoder_and_its_inverses(tmp_path, data):
    """As shipped (the authors' DTP encoder, transposed-conv inverses), on small files in the real formats."""
    if data == "cifar":
        write_cifar100(tmp_path, fine=list(range(12)), coarse=[0] * 12)
        write_cifar10(tmp_path, per_batch=4)
    else:
        write_stl10(tmp_path, train_labels=[1, 2] * 4, n_test=4, n_unlabeled=8, test_labels=[1, 2] * 2)
    sets = [f'data.path="{tmp_path}"', "train.epochs=1", "train.batch_size=4"]
    path = ROOT / "protocols" / f"tang_dtp_{data}_paper.toml"
    protocol = load(path, sets)
    assert protocol.model.arch == "tang_dtp" and protocol.rule.name == "hinge_dtp"
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet",
                 *(a for o in sets for a in ("--set", o))]) == 0
    run = Run.path_for(tmp_path / "runs", protocol)
    with np.load(run / "checkpoints" / "epoch_0001.npz") as a:
        assert a["param/2/V"].shape == (64, 3, 3, 32) and a["param/4/c"].shape == (128,)
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert {int(r[2]) for r in rows if r[3] == "inverse_loss"} == {2, 3, 4}       # every layer above the first
    assert all(np.isfinite(float(r[4])) for r in rows)


def test_paper_protocols_without_data_say_where_to_put_it(tmp_path, capsys):
    assert main(["run", str(ROOT / "protocols" / "clapp_stl10_paper.toml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "[data] path = '': stl10 is read from disk" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, key, message", [
    ('[model]\narch = "small"\n[engine]\nname = "brian"\n[rule]\noptimizer = "sgd"', "model.arch",
     r"\[model\] arch = 'small': the Brian2 engine simulates dense layers .*; allowed: 'dense'"),
    ('[stimulus]\ncrop = 4', "stimulus.crop", r"\[stimulus\] crop = 4: dense layers see .*; allowed: 0"),
    ('[model]\narch = "small"\nlayers = [32, 32]', "model.layers",
     r"\[model\] layers = \[32, 32\]: \[model\] arch = 'small' names every layer of the encoder .*; allowed: \[64, 64\]"),
    ('[stimulus]\nmean = 0.4', "stimulus.mean", r"\[stimulus\] mean = 0.4: dense layers see .*; allowed: 0.0"),
    ('[rule]\nsampling = "authors"', "rule.sampling",
     r"\[rule\] sampling = 'authors': dense layers predict .*; allowed: 'rolled'"),
    ('[model]\narch = "small"\n[data]\nsource = "vowels"', "model.arch",
     r"\[model\] arch = 'small': the convolutional encoders cut patch grids from grey images, and 'vowels' holds "
     r"sound; allowed here: 'dense'"),
    ('[model]\narch = "small"\n[rule]\nname = "hinge_dtp"\n[stimulus]\nkind = "views"\ncrop = 6', "stimulus.crop",
     r"\[stimulus\] crop = 6: DTP's inverse of layer 2 \(a transposed convolution of stride 2\) undoes its max-pool "
     r"only on maps of even side, and views of 6 x 6 give it 3 x 3"),
    ('[rule]\nname = "hinge_gll_bp"\nhead_input = "pool2"\n[model]\narch = "small"\n[stimulus]\nkind = "views"\n'
     'crop = 4', "rule.head_input", r"\[rule\] head_input = 'pool2': each head averages 2 x 2 windows of its layer's "
     r"map, and layer 2's map is 1 x 1 \(views of 4 x 4\)"),
    ('[rule]\nname = "hinge_gll_bp"\n[stimulus]\nkind = "views"\ncrop = 9', "stimulus.crop",
     r"\[stimulus\] crop = 9: larger than the images \(8 x 8\)"),
    ('[rule]\nname = "hinge_gll_bp"\noffsets = [2]\n[stimulus]\nkind = "views"', "rule.offsets",
     r"\[rule\] offsets = \[2\]: not read by rule 'hinge_gll_bp' on engine 'numpy'"),
    ('[model]\narch = "small"\n[stimulus]\npatch = 8\nstride = 4\n[data]\nsource = "natural_images"\n'
     '[rule]\noffsets = [3]', "rule.offsets",
     r"\[rule\] offsets = \[3\]: the patch grid has 3 rows, so a patch can predict at most 2 rows below it"),
    ('[evaluate]\nsource = "natural_images"', "evaluate.source",
     r"\[evaluate\] source = 'natural_images': its samples have shape \(16, 16\), the training data's \(8, 8\)"),
])
def test_settings_an_engine_cannot_honour_are_refused(text, key, message):
    with pytest.raises(ProtocolError, match=message) as err:
        prepare(loads(f'name = "x"\n{text}'))
    assert err.value.key == key


def test_tang_stl10_paper_protocol_reads_unlabeled_images_batch_by_batch(tmp_path):
    write_stl10(tmp_path, train_labels=[1, 2] * 4, n_test=4, n_unlabeled=9, test_labels=[1, 2] * 2)
    sets = [f'data.path="{tmp_path}"', 'model.arch="small"', "train.epochs=1", "train.batch_size=4", "rule.head=8"]
    path = ROOT / "protocols" / "tang_e2e_bp_stl10_paper.toml"
    prepared = prepare(load(path, sets))
    assert not isinstance(prepared.dataset.samples, np.ndarray)          # never read whole
    assert prepared.dataset.samples.shape[1:] == (96, 96, 3)             # RGB, cut to 64 x 64 views
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet",
                 *(a for o in sets for a in ("--set", o))]) == 0
    summary = json.loads((Run.path_for(tmp_path / "runs", load(path, sets)) / "summary.json").read_text())
    assert set(summary["probe"]) == {"1", "2"}
