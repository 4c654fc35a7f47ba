"""Real-format loaders (STL-10, CIFAR, LibriSpeech, UCF-101): small files written here in each published
format are read back through :func:`neuroplastic.data.load`; every malformed input fails with a
:class:`DataError` naming the path and what was expected.

The layouts are written independently of the loaders (byte offsets, the pickled dicts, real FLAC and
AVI files), so a wrong transpose or channel order fails the value checks.
"""
from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from neuroplastic import data
from neuroplastic.data import DataError, cifar, librispeech, stl10, ucf101
from neuroplastic.data.mapped import LazyArray, RecordFile

STL_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
STL_BYTES = 3 * 96 * 96


def luma(rgb):
    """Reference grey of uint8 RGB ``(..., 3)``, in float64."""
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


# ---------------------------------------------------------------------------------------------- STL-10

def stl_offset(image, channel, row, col):
    """Byte of (image, channel, row, col): channel planes, each stored column by column."""
    return image * STL_BYTES + channel * 96 * 96 + col * 96 + row


def write_stl10(parent: Path, train_labels=(1, 10, 3), n_test=2, n_unlabeled=3, seed=0,
                test_labels=(2, 7)) -> tuple[Path, dict]:
    """``parent/stl10_binary`` with random images; returns it and the (n, rows, cols, 3) images per split."""
    root = parent / "stl10_binary"
    root.mkdir(parents=True)
    (root / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    rng = np.random.default_rng(seed)
    images = {}
    for split, n in (("train", len(train_labels)), ("test", n_test), ("unlabeled", n_unlabeled)):
        rgb = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        raw = np.zeros(n * STL_BYTES, np.uint8)
        i, r, c, ch = np.meshgrid(*map(np.arange, rgb.shape), indexing="ij")
        raw[stl_offset(i, ch, r, c).ravel()] = rgb.ravel()
        raw.tofile(root / f"{split}_X.bin")
        images[split] = rgb
    np.asarray(train_labels, np.uint8).tofile(root / "train_y.bin")
    np.asarray(test_labels[:n_test], np.uint8).tofile(root / "test_y.bin")
    return root, images


def test_stl10_column_major_pixel(tmp_path):
    root, _ = write_stl10(tmp_path)
    raw = np.fromfile(root / "train_X.bin", np.uint8)
    raw[:STL_BYTES] = 0
    raw[stl_offset(0, 0, 5, 20)] = 255          # red, row 5, column 20
    raw[stl_offset(0, 2, 70, 3)] = 255          # blue, row 70, column 3
    raw.tofile(root / "train_X.bin")
    im = data.load("stl10", path=str(tmp_path), split="train").samples[0]
    assert im.shape == (96, 96) and im.dtype == np.float32
    assert im[5, 20] == pytest.approx(0.299) and im[70, 3] == pytest.approx(0.114)
    im[5, 20] = im[70, 3] = 0
    assert not im.any()                          # in particular not at the transposed (20, 5), (3, 70)


def test_stl10_splits_labels_and_values(tmp_path):
    root, images = write_stl10(tmp_path)
    for path in (tmp_path, root):                # the parent or stl10_binary itself
        ds = data.load("stl10", path=str(path), split="train")
        assert (ds.name, ds.domain, ds.classes) == ("stl10", "image", STL_CLASSES)
        assert ds.labels.tolist() == [0, 9, 2]
        assert ds.samples.shape == (3, 96, 96) and not isinstance(ds.samples, np.ndarray)
        np.testing.assert_allclose(np.asarray(ds.samples), luma(images["train"]), atol=1e-6)
    test = data.load("stl10", path=str(root), split="test")
    assert test.labels.tolist() == [1, 6]
    np.testing.assert_allclose(test.samples[:], luma(images["test"]), atol=1e-6)
    unl = data.load("stl10", path=str(tmp_path), split="unlabeled")
    assert unl.labels.tolist() == [-1, -1, -1] and unl.classes == STL_CLASSES
    batches = list(unl.batches(2))
    assert [b[0].shape for b in batches] == [(2, 96, 96), (1, 96, 96)]
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]), luma(images["unlabeled"]), atol=1e-6)
    sub = data.load("stl10", path=str(tmp_path), split="unlabeled", max_samples=2, seed=3)
    assert isinstance(sub.samples, np.ndarray) and sub.samples.shape == (2, 96, 96)


def test_record_file_indexing_matches_an_array(tmp_path):
    _, images = write_stl10(tmp_path, n_unlabeled=7)
    lazy = data.load("stl10", path=str(tmp_path), split="unlabeled").samples
    full = luma(images["unlabeled"]).astype(np.float32)
    assert (len(lazy), lazy.shape, lazy.dtype, lazy.ndim) == (7, (7, 96, 96), np.float32, 3)
    for key in (0, -1, np.int64(3), slice(None), slice(1, 6, 2), slice(None, None, -1), slice(5, 2),
                [4, 1, 4, 0], [], np.array([[0, 6], [2, 2]]), np.arange(7) % 2 == 1, (2, slice(10, 12), 7),
                ([1, 3], 5)):
        np.testing.assert_allclose(lazy[key], full[key], atol=1e-6, err_msg=str(key))
    for bad in (7, -8, [0, 7], np.ones(3, bool), 1.5):
        with pytest.raises(IndexError):
            lazy[bad]
    again = pickle.loads(pickle.dumps(lazy))      # holds a path, not an open file: goes to worker processes
    np.testing.assert_array_equal(again[2:4], lazy[2:4])


def test_record_file_reads_in_chunks(tmp_path):
    path = tmp_path / "r.bin"
    np.arange(50, dtype=np.uint8).tofile(path)
    rf = RecordFile(path, 10, (5,), (5,), lambda raw: raw.astype(np.float32), chunk=3)
    np.testing.assert_array_equal(rf[::-1], np.arange(50).reshape(10, 5)[::-1])
    assert isinstance(rf, LazyArray)
    np.arange(40, dtype=np.uint8).tofile(path)     # the file changed after the data set was opened
    with pytest.raises(DataError, match=r"r\.bin: file shrank while reading: records 8\.\.9 need 10 bytes, got 0"):
        rf[8:]


def test_stl10_truncated_file(tmp_path):
    root, _ = write_stl10(tmp_path)
    x = root / "unlabeled_X.bin"
    x.write_bytes(x.read_bytes()[:-1])
    with pytest.raises(DataError) as err:
        data.load("stl10", path=str(tmp_path), split="unlabeled")
    assert str(x) in str(err.value)
    assert f"truncated file: {3 * STL_BYTES - 1} bytes is not a positive multiple of 27648" in str(err.value)


def test_stl10_images_do_not_match_labels(tmp_path):
    root, _ = write_stl10(tmp_path)
    np.asarray([1, 2, 3, 4], np.uint8).tofile(root / "train_y.bin")
    with pytest.raises(DataError) as err:
        data.load("stl10", path=str(tmp_path), split="train")
    assert str(root / "train_X.bin") in str(err.value)
    assert f"truncated file: {3 * STL_BYTES} bytes, expected 4 x 27648 = {4 * STL_BYTES} bytes" in str(err.value)


def test_stl10_bad_label_and_missing_names(tmp_path):
    root, _ = write_stl10(tmp_path, train_labels=(1, 11, 2))
    with pytest.raises(DataError, match=r"train_y\.bin: has label 11 at position 1; expected one uint8 label 1\.\.10"):
        data.load("stl10", path=str(root), split="train")
    (root / "class_names.txt").unlink()
    with pytest.raises(DataError, match=r"class_names\.txt: file not found \(expected the 10 STL-10 class names"):
        data.load("stl10", path=str(root), split="test")


def test_stl10_directory_without_data(tmp_path):
    with pytest.raises(DataError) as err:
        data.load("stl10", path=str(tmp_path))
    assert str(err.value).startswith(f"{tmp_path}: no STL-10 data here: expected a 'stl10_binary' directory")
    with pytest.raises(ValueError, match="unknown STL-10 split 'valid'; allowed: train, test, unlabeled"):
        stl10.load(tmp_path, split="valid")              # called directly, without the registry's check


# ----------------------------------------------------------------------------------------------- CIFAR

def write_cifar10(parent: Path, per_batch=4, seed=0) -> tuple[Path, np.ndarray, list[int]]:
    """``parent/cifar-10-batches-py``; returns it, the (n, 32, 32, 3) training images and labels."""
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}, fh)
    rgb = rng.integers(0, 256, (6 * per_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 6 * per_batch).tolist()
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        part = slice(b * per_batch, (b + 1) * per_batch)
        flat = rgb[part].transpose(0, 3, 1, 2).reshape(per_batch, 3072)   # R plane, G plane, B plane; row-major
        with open(root / name, "wb") as fh:
            pickle.dump({b"batch_label": b"batch", b"labels": labels[part], b"data": flat,
                         b"filenames": [b"x.png"] * per_batch}, fh)
    return root, rgb, labels


def test_cifar10_layout_labels_and_names(tmp_path):
    root, rgb, labels = write_cifar10(tmp_path)
    batch = pickle.loads((root / "data_batch_1").read_bytes())
    batch[b"data"][0] = 0
    batch[b"data"][0, 5 * 32 + 20] = 255          # red plane, row 5, column 20
    batch[b"data"][0, 2048 + 30 * 32 + 1] = 255   # blue plane, row 30, column 1
    (root / "data_batch_1").write_bytes(pickle.dumps(batch))
    rgb[0] = 0
    rgb[0, 5, 20, 0] = rgb[0, 30, 1, 2] = 255
    for path in (tmp_path, root):
        ds = data.load("cifar10", path=str(path), split="train")
        assert (ds.name, ds.domain, ds.samples.shape, ds.samples.dtype) == ("cifar10", "image", (20, 32, 32),
                                                                            np.float32)
        assert ds.classes[:3] == ("airplane", "automobile", "bird") and len(ds.classes) == 10
        assert ds.labels.tolist() == labels[:20]
        assert ds.samples[0, 5, 20] == pytest.approx(0.299) and ds.samples[0, 30, 1] == pytest.approx(0.114)
        np.testing.assert_allclose(ds.samples, luma(rgb[:20]), atol=1e-6)
    test = data.load("cifar10", path=str(root), split="test")
    assert test.labels.tolist() == labels[20:]
    np.testing.assert_allclose(test.samples, luma(rgb[20:]), atol=1e-6)


def write_cifar100(parent: Path, fine=(99, 0, 42), coarse=(19, 0, 7), n_test=2, seed=1) -> tuple[Path, np.ndarray]:
    """``parent/cifar-100-python`` with ``len(fine)`` training images; returns it and all (n, 32, 32, 3) images."""
    root = parent / "cifar-100-python"
    root.mkdir(parents=True)
    with open(root / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}, fh)
    n_train = len(fine)
    rgb = np.random.default_rng(seed).integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    for name, part in (("train", slice(0, n_train)), ("test", slice(n_train, n_train + n_test))):
        n = part.stop - part.start
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": rgb[part].transpose(0, 3, 1, 2).reshape(n, 3072),
                         b"fine_labels": list(fine)[:n], b"coarse_labels": list(coarse)[:n]}, fh)
    return root, rgb


def test_cifar100_fine_and_coarse(tmp_path):
    root, rgb = write_cifar100(tmp_path)
    ds = data.load("cifar100", path=str(tmp_path), split="train")          # default label: fine
    assert ds.labels.tolist() == [99, 0, 42] and ds.classes == tuple(f"f{i}" for i in range(100))
    np.testing.assert_allclose(ds.samples, luma(rgb[:3]), atol=1e-6)
    ds = data.load("cifar100", path=str(root), split="test", label="coarse")
    assert ds.labels.tolist() == [19, 0] and ds.classes == tuple(f"c{i}" for i in range(20))
    with pytest.raises(ValueError, match=r"label = 'class' is not a labelling of cifar100; allowed: fine, coarse"):
        data.load("cifar100", path=str(root), label="class")


def test_cifar_python2_pickle_with_numpy1_names(tmp_path):
    """The published batches were pickled by Python 2 and numpy 1 (``numpy.core.multiarray``)."""
    py2 = (b"\x80\x02}q\x00(U\x04data"
           b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
           b"(K\x01K\x02K\x03\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
           b"K\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tbU\x06labels](K\x01K\x02eu.")
    (tmp_path / "batch").write_bytes(py2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # numpy 2 warns on numpy.core names: the loader maps them
        d = cifar.unpickle(tmp_path / "batch")
    assert d[b"labels"] == [1, 2] and d[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(d[b"data"], np.arange(6).reshape(2, 3))


def test_cifar_truncated_batch(tmp_path):
    root, _, _ = write_cifar10(tmp_path)
    f = root / "data_batch_3"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError) as err:
        data.load("cifar10", path=str(tmp_path))
    assert str(err.value).startswith(f"{f}: cannot unpickle (")
    assert "expected a CIFAR python batch, a pickled dict (truncated or not a CIFAR file?)" in str(err.value)


def test_cifar_wrong_data_shape(tmp_path):
    root, _, _ = write_cifar10(tmp_path)
    f = root / "test_batch"
    batch = pickle.loads(f.read_bytes())
    batch[b"data"] = batch[b"data"][:, :3000]
    f.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError) as err:
        data.load("cifar10", path=str(tmp_path), split="test")
    assert str(err.value) == (f"{f}: data is (4, 3000) uint8, expected (N, 3072) uint8: per image 1024 red, "
                              "1024 green, 1024 blue values, each plane a row-major 32 x 32 image")


def test_cifar_labels_must_fit(tmp_path):
    root, _, _ = write_cifar10(tmp_path)
    f = root / "data_batch_2"
    batch = pickle.loads(f.read_bytes())
    del batch[b"labels"]
    f.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"data_batch_2: no b'labels' entry; entries: b'batch_label', b'data'"):
        data.load("cifar10", path=str(root))
    batch[b"labels"] = [0, 1, 2]
    f.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"data_batch_2: b'labels' has shape \(3,\), expected 4 integer labels"):
        data.load("cifar10", path=str(root))


class _Payload:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_cifar_refuses_code_in_pickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, _, _ = write_cifar10(tmp_path)
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": _Payload()}))
    with pytest.raises(DataError) as err:
        data.load("cifar10", path=str(tmp_path))
    assert str(err.value).startswith(f"{root / 'batches.meta'}: refused to unpickle the global posix.system")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------ LibriSpeech

def write_librispeech(parent: Path, durations=None, rate=16000, split="dev-clean") -> dict[str, np.ndarray]:
    """``parent/LibriSpeech/<split>`` with FLAC utterances of the given seconds; returns the waveforms."""
    import soundfile as sf

    durations = durations or {"19-198-0001": 1.5, "19-198-0002": 0.5, "84-121123-0000": 2.25}
    rng = np.random.default_rng(0)
    waves = {}
    for utt, seconds in durations.items():
        spk, ch, _ = utt.split("-")
        folder = parent / "LibriSpeech" / split / spk / ch
        folder.mkdir(parents=True, exist_ok=True)
        x = rng.integers(-2**15, 2**15, int(seconds * rate)).astype(np.int16)
        sf.write(folder / f"{utt}.flac", x, rate, subtype="PCM_16")
        waves[utt] = x / np.float32(2**15)
        with open(folder / f"{spk}-{ch}.trans.txt", "a") as fh:
            fh.write(f"{utt} WORDS OF {utt}\n")
    return waves


def test_librispeech_first_second_of_each_utterance(tmp_path):
    waves = write_librispeech(tmp_path)
    for path in (tmp_path, tmp_path / "LibriSpeech"):
        ds = data.load("librispeech", path=str(path))          # default split dev-clean, label speaker
        assert (ds.name, ds.domain, ds.rate, ds.classes) == ("librispeech", "sound", 16000.0, ("19", "84"))
        assert ds.samples.shape == (2, 16000) and ds.labels.tolist() == [0, 1]    # 0.5 s utterance skipped
        np.testing.assert_array_equal(ds.samples[0], waves["19-198-0001"][:16000])
        np.testing.assert_array_equal(ds.samples[1], waves["84-121123-0000"][:16000])
        assert ds.samples.transcripts == ("WORDS OF 19-198-0001", "WORDS OF 84-121123-0000")
        assert ds.samples.dtype == np.float32 and np.abs(ds.samples[:]).max() <= 1
    ch = data.load("librispeech", path=str(tmp_path), label="chapter")
    assert ch.classes == ("19-198", "84-121123")


def test_librispeech_segments(tmp_path):
    waves = write_librispeech(tmp_path)
    ds = librispeech.load(tmp_path, seconds=0.5, segments=0)
    # 1.5 s -> 3 windows, 0.5 s -> 1, 2.25 s -> 4
    assert ds.samples.shape == (8, 8000) and ds.labels.tolist() == [0] * 4 + [1] * 4
    np.testing.assert_array_equal(ds.samples[2], waves["19-198-0001"][16000:24000])
    np.testing.assert_array_equal(ds.samples[7], waves["84-121123-0000"][24000:32000])
    assert librispeech.load(tmp_path, seconds=0.5, segments=2).samples.shape == (5, 8000)


def test_librispeech_wrong_sample_rate(tmp_path):
    write_librispeech(tmp_path, {"7-1-0000": 1.2}, rate=8000)
    f = tmp_path / "LibriSpeech" / "dev-clean" / "7" / "1" / "7-1-0000.flac"
    with pytest.raises(DataError) as err:
        data.load("librispeech", path=str(tmp_path))
    assert str(err.value) == f"{f}: sample rate 8000 Hz, expected 16000 Hz (LibriSpeech is 16 kHz)"


def test_librispeech_transcripts_checked(tmp_path):
    write_librispeech(tmp_path)
    trans = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    trans.write_text("84-121123-0000 WORDS\n84-121123-0009 NOT RECORDED\n")
    with pytest.raises(DataError) as err:
        data.load("librispeech", path=str(tmp_path))
    assert str(err.value) == f"{trans.parent / '84-121123-0009.flac'}: file not found (listed in 84-121123.trans.txt)"
    trans.write_text("84-121123-0000\n")
    with pytest.raises(DataError, match=r"84-121123\.trans\.txt: line 1 = '84-121123-0000': expected "
                                        r"'84-121123-<utt> TRANSCRIPT'"):
        data.load("librispeech", path=str(tmp_path))
    trans.unlink()
    with pytest.raises(DataError) as err:
        data.load("librispeech", path=str(tmp_path))
    assert str(err.value).startswith(f"{trans}: transcript file not found (expected '<utterance id> TRANSCRIPT'")


def test_librispeech_splits(tmp_path):
    write_librispeech(tmp_path)
    with pytest.raises(ValueError) as err:
        data.load("librispeech", path=str(tmp_path), split="dev")
    assert str(err.value) == ("[data] split = 'dev' is not a split of librispeech; allowed: dev-clean, dev-other, "
                              "test-clean, test-other, train-clean-100, train-clean-360, train-other-500")
    with pytest.raises(ValueError, match="unknown LibriSpeech split 'dev'; allowed: dev-clean, dev-other"):
        librispeech.load(tmp_path, split="dev")
    with pytest.raises(DataError) as err:
        data.load("librispeech", path=str(tmp_path), split="test-clean")
    assert str(err.value).startswith(f"{tmp_path / 'LibriSpeech' / 'test-clean'}: split not found; splits in "
                                     f"{tmp_path / 'LibriSpeech'}: dev-clean (expected")


# ---------------------------------------------------------------------------------------------- UCF-101

def write_clip(path: Path, n_frames=20, fps=25, w=64, h=48):
    """An MPEG-4 AVI of a white 16 x 16 square moving right 2 pixels per frame; returns the frames."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.zeros((n_frames, h, w), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"qscale": "1"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(n_frames):
            frames[t, 8:24, 4 + 2 * t:20 + 2 * t] = 255   # off the vertical centre: a flip shows
            rgb = np.repeat(frames[t, :, :, None], 3, axis=2)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return frames / 255.0


def write_ucf101(parent: Path) -> dict[str, np.ndarray]:
    videos, lists = parent / "UCF-101", parent / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")   # CRLF, as published
    made = {"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi": {},
            "HandstandPushups/v_HandStandPushups_g08_c01.avi": {"fps": 30, "w": 80, "h": 60},
            "HandstandPushups/v_HandStandPushups_g09_c01.avi": {"n_frames": 8},
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": {}}
    clips = {rel: write_clip(videos / rel, **kw) for rel, kw in made.items()}
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                           "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
                                           "HandstandPushups/v_HandStandPushups_g09_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n")
    return clips


def test_area_matrix():
    m = ucf101.area_matrix(6, 3)
    np.testing.assert_allclose(m, np.kron(np.eye(3), [0.5, 0.5]))
    m = ucf101.area_matrix(3, 2)                   # each output covers 1.5 input pixels
    np.testing.assert_allclose(m, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], atol=1e-7)
    np.testing.assert_allclose(ucf101.area_matrix(240, 32).sum(axis=1), 1, atol=1e-6)


def test_ucf101_clips(tmp_path):
    clips = write_ucf101(tmp_path)
    ds = data.load("ucf101", path=str(tmp_path), split="train1")
    assert (ds.name, ds.domain, ds.classes) == ("ucf101", "video", ("ApplyEyeMakeup", "HandstandPushups"))
    assert ds.labels.tolist() == [0, 1]            # the 8-frame clip is skipped (fewer than 16 frames)
    assert ds.samples.shape == (2, 16, 32, 32) and ds.samples.dtype == np.float32
    assert ds.rate == 25.0 and ds.samples.rates.tolist() == [25.0, 30.0]
    x = ds.samples[:]
    assert x.min() >= 0 and x.max() <= 1
    ideal = _block_mean(clips["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"][:16], (48, 64), (32, 32))
    assert np.abs(x[0] - ideal).mean() < 0.02      # lossy MPEG-4, but the same picture
    cols = np.arange(32)
    centre = (x[0].sum(axis=1) * cols).sum(axis=1) / x[0].sum(axis=(1, 2))
    np.testing.assert_allclose(np.diff(centre), 1.0, atol=0.1)   # 2 px/frame at 64 -> 32 columns
    test = data.load("ucf101", path=str(tmp_path), split="test1")
    assert test.labels.tolist() == [0] and test.samples.shape == (1, 16, 32, 32)
    small = ucf101.load(tmp_path, split="train1", frames=4, size=(12, 16))
    assert small.samples.shape == (3, 4, 12, 16)   # now the 8-frame clip is long enough


def _block_mean(frames, shape, size):
    ry, rx = ucf101.area_matrix(shape[0], size[0]), ucf101.area_matrix(shape[1], size[1])
    return np.einsum("ij,tjk,lk->til", ry, frames, rx)


def test_ucf101_missing_listed_video(tmp_path):
    write_ucf101(tmp_path)
    f = tmp_path / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi"
    f.unlink()
    with pytest.raises(DataError) as err:
        data.load("ucf101", path=str(tmp_path), split="train1")
    assert str(err.value) == f"{f}: video not found (listed on line 2 of trainlist01.txt)"


def test_ucf101_lists_checked(tmp_path):
    write_ucf101(tmp_path)
    lists = tmp_path / "ucfTrainTestlist"
    with pytest.raises(DataError) as err:
        data.load("ucf101", path=str(tmp_path), split="test2")
    assert str(err.value).startswith(f"{lists / 'testlist02.txt'}: file not found (expected '<Class>/<clip>.avi' lines")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt: line 1 = .*: index 2 but ApplyEyeMakeup is class 1"):
        data.load("ucf101", path=str(tmp_path))
    (tmp_path / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi").write_bytes(b"not a video")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    with pytest.raises(DataError, match=r"v_ApplyEyeMakeup_g08_c01\.avi: cannot open the video .*expected an AVI"):
        data.load("ucf101", path=str(tmp_path))
    with pytest.raises(ValueError, match="split = 'train' is not a split of ucf101; allowed: train1, test1, train2, "
                                         "test2, train3, test3"):
        data.load("ucf101", path=str(tmp_path), split="train")


# --------------------------------------------------------------------------------------- every loader

@pytest.mark.parametrize("source, expected", [
    ("stl10", "expected the STL-10 'stl10_binary' directory or its parent"),
    ("cifar10", "expected the cifar10 'cifar-10-batches-py' directory or its parent"),
    ("cifar100", "expected the cifar100 'cifar-100-python' directory or its parent"),
    ("librispeech", "expected the 'LibriSpeech' directory or its parent"),
    ("ucf101", "expected the directory holding UCF-101/ and ucfTrainTestlist/"),
])
def test_missing_directory(tmp_path, source, expected):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        data.load(source, path=str(missing))
    assert str(err.value) == f"{missing}: directory not found ({expected})"
    assert err.value.path == str(missing)


def test_empty_path_names_the_source():
    with pytest.raises(ValueError, match=r"\[data\] path is empty: stl10 is read from disk.*stl10_binary"):
        data.load("stl10")


def test_nothing_cached_from_a_failed_load(tmp_path):
    """A corrected directory loads after a failed load of the same path."""
    root, _ = write_stl10(tmp_path / "stl")
    x = root / "train_X.bin"
    good = x.read_bytes()
    x.write_bytes(good[:-100])
    with pytest.raises(DataError, match="truncated"):
        data.load("stl10", path=str(root), split="train")
    x.write_bytes(good)
    assert len(data.load("stl10", path=str(root), split="train")) == 3

    croot, _, _ = write_cifar10(tmp_path / "c")
    f = croot / "test_batch"
    good = f.read_bytes()
    f.write_bytes(good[:100])
    with pytest.raises(DataError, match="cannot unpickle"):
        data.load("cifar10", path=str(croot), split="test")
    f.write_bytes(good)
    assert len(data.load("cifar10", path=str(croot), split="test")) == 4

    write_librispeech(tmp_path / "l", {"7-1-0000": 1.2}, rate=8000)
    with pytest.raises(DataError, match="sample rate 8000 Hz"):
        data.load("librispeech", path=str(tmp_path / "l"))
    (tmp_path / "l" / "LibriSpeech" / "dev-clean" / "7" / "1" / "7-1-0000.flac").unlink()
    (tmp_path / "l" / "LibriSpeech" / "dev-clean" / "7" / "1" / "7-1.trans.txt").unlink()
    write_librispeech(tmp_path / "l", {"7-1-0000": 1.2})
    assert len(data.load("librispeech", path=str(tmp_path / "l"))) == 1


@pytest.mark.parametrize("source, module, extra", [("librispeech", "soundfile", "audio"), ("ucf101", "av", "video")])
def test_missing_decoder_names_the_extra(tmp_path, monkeypatch, source, module, extra):
    write_librispeech(tmp_path) if source == "librispeech" else write_ucf101(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)        # import fails as if not installed
    with pytest.raises(ImportError, match=rf"needs .*pip install neuroplastic\[{extra}\]"):
        data.load(source, path=str(tmp_path))
    assert data.DATASETS[source].extra == extra
