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
    with pytest.raises(ValueError, match=r"\[data\] path = .*: stl10 is read from disk.*stl10_binary"):
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


# ------------------------------------------------------------------------- hostile and unreadable input
#
# Paths read from list files stay inside the data directory; a pickle cannot make the loader allocate
# more than its own bytes hold; text that is not UTF-8 and files that cannot be read are DataErrors
# naming the file; lazily read images are read once per batch when cut into glimpses; view settings
# that do not fit the images name their key.

import json
import os
import struct
import subprocess
import textwrap

from neuroplastic.errors import SettingError


@pytest.mark.parametrize("entry", ["ApplyEyeMakeup/../../../x.avi", "ApplyEyeMakeup/../../outside.avi"])
def test_ucf101_list_entry_outside_the_data_directory(tmp_path, entry):
    data_dir = tmp_path / "ucf"
    write_ucf101(data_dir)
    write_clip(tmp_path / "outside.avi")
    write_clip(tmp_path / "x.avi")
    lists = data_dir / "ucfTrainTestlist"
    (lists / "trainlist01.txt").write_text(f"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n{entry} 1\n")
    with pytest.raises(DataError) as err:
        data.load("ucf101", path=str(data_dir), split="train1")
    assert str(err.value).startswith(f"{lists / 'trainlist01.txt'}: line 2: entry {entry!r} leads outside the data "
                                     f"directory {data_dir / 'UCF-101'}")


def test_ucf101_absolute_and_linked_entries_refused(tmp_path):
    data_dir = tmp_path / "ucf"
    write_ucf101(data_dir)
    outside = tmp_path / "elsewhere" / "v.avi"
    write_clip(outside)
    lists = data_dir / "ucfTrainTestlist"
    (lists / "testlist01.txt").write_text(f"{outside}\n")
    with pytest.raises(DataError, match=r"testlist01\.txt: line 1 = '/.*/v\.avi': expected '<Class>/<clip>\.avi'"):
        data.load("ucf101", path=str(data_dir), split="test1")     # an absolute path names no class
    # a class directory that is a link out of the data directory
    (data_dir / "UCF-101" / "ApplyEyeMakeup" / "out").symlink_to(outside.parent)
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/out/v.avi\n")
    with pytest.raises(DataError, match=r"testlist01\.txt: line 1: entry 'ApplyEyeMakeup/out/v\.avi' leads outside"):
        data.load("ucf101", path=str(data_dir), split="test1")


def test_librispeech_transcript_ids_cannot_name_paths(tmp_path):
    write_librispeech(tmp_path)
    trans = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    trans.write_text("84-121123-0000 WORDS\n84-121123-../../../x WORDS\n")
    with pytest.raises(DataError, match=r"84-121123\.trans\.txt: line 2 = '84-121123-\.\./\.\./\.\./x WORDS': expected"):
        data.load("librispeech", path=str(tmp_path))


# -- text that is not UTF-8, files that cannot be read

def _not_utf8(path: Path):
    path.write_bytes(path.read_bytes().replace(b"\n", b"\xff\xfe\n", 1))


def test_text_files_that_are_not_utf8(tmp_path):
    root, _ = write_stl10(tmp_path / "stl")
    _not_utf8(root / "class_names.txt")
    with pytest.raises(DataError) as err:
        data.load("stl10", path=str(root), split="train")
    assert str(err.value).startswith(f"{root / 'class_names.txt'}: not UTF-8 text: byte 0xff at offset 8 (line 1); "
                                     "expected the 10 STL-10 class names")

    write_ucf101(tmp_path / "ucf")
    for name in ("classInd.txt", "trainlist01.txt"):
        f = tmp_path / "ucf" / "ucfTrainTestlist" / name
        good = f.read_bytes()
        _not_utf8(f)
        with pytest.raises(DataError) as err:
            data.load("ucf101", path=str(tmp_path / "ucf"), split="train1")
        assert str(err.value).startswith(f"{f}: not UTF-8 text: byte 0xff")
        f.write_bytes(good)

    write_librispeech(tmp_path / "ls")
    trans = tmp_path / "ls" / "LibriSpeech" / "dev-clean" / "19" / "198" / "19-198.trans.txt"
    trans.write_bytes(b"19-198-0001 CAF\xe9\n19-198-0002 X\n")           # latin-1, not UTF-8
    with pytest.raises(DataError) as err:
        data.load("librispeech", path=str(tmp_path / "ls"))
    assert str(err.value).startswith(f"{trans}: not UTF-8 text: byte 0xe9 at offset 15 (line 1)")


def test_a_directory_where_a_file_is_expected(tmp_path):
    root, _ = write_stl10(tmp_path / "stl")
    for name in ("class_names.txt", "train_y.bin", "train_X.bin"):
        f = root / name
        good = f.read_bytes()
        f.unlink()
        f.mkdir()
        with pytest.raises(DataError) as err:
            data.load("stl10", path=str(root), split="train")
        assert str(err.value).startswith(f"{f}: is a directory, expected a file (")
        f.rmdir()
        f.write_bytes(good)
    croot, _, _ = write_cifar10(tmp_path / "c")
    (croot / "test_batch").unlink()
    (croot / "test_batch").mkdir()
    with pytest.raises(DataError, match=r"test_batch: is a directory, expected a file \(a CIFAR python batch"):
        data.load("cifar10", path=str(croot), split="test")
    write_ucf101(tmp_path / "ucf")
    listed = tmp_path / "ucf" / "ucfTrainTestlist" / "classInd.txt"
    listed.unlink()
    listed.mkdir()
    with pytest.raises(DataError, match=r"classInd\.txt: is a directory, expected a file"):
        data.load("ucf101", path=str(tmp_path / "ucf"), split="train1")
    write_librispeech(tmp_path / "ls")
    trans = tmp_path / "ls" / "LibriSpeech" / "dev-clean" / "19" / "198" / "19-198.trans.txt"
    trans.unlink()
    trans.mkdir()
    with pytest.raises(DataError, match=r"19-198\.trans\.txt: is a directory, expected a file"):
        data.load("librispeech", path=str(tmp_path / "ls"))


def _deny(monkeypatch, denied: Path):
    """Opening ``denied`` fails as a file without read permission does (tests may run as root)."""
    real_open, real_read_bytes, real_fromfile, real_iterdir = open, Path.read_bytes, np.fromfile, Path.iterdir

    def check(path):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))

    def fake_open(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)):
            check(path)
        return real_open(path, *args, **kwargs)

    def fake_read_bytes(self):
        check(self)
        return real_read_bytes(self)

    def fake_fromfile(path, *args, **kwargs):
        check(path)
        return real_fromfile(path, *args, **kwargs)

    def fake_iterdir(self):
        check(self)
        return real_iterdir(self)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(Path, "read_bytes", fake_read_bytes)
    monkeypatch.setattr(np, "fromfile", fake_fromfile)
    monkeypatch.setattr(Path, "iterdir", fake_iterdir)


@pytest.mark.parametrize("source, name", [
    ("stl10", "stl10_binary/class_names.txt"), ("stl10", "stl10_binary/train_y.bin"),
    ("stl10", "stl10_binary/train_X.bin"), ("cifar10", "cifar-10-batches-py/batches.meta"),
    ("cifar10", "cifar-10-batches-py/data_batch_4"), ("ucf101", "ucfTrainTestlist/trainlist01.txt"),
    ("librispeech", "LibriSpeech/dev-clean/84/121123/84-121123.trans.txt"), ("librispeech", "LibriSpeech/dev-clean/19"),
])
def test_permission_denied(tmp_path, monkeypatch, source, name):
    {"stl10": write_stl10, "cifar10": write_cifar10, "ucf101": write_ucf101,
     "librispeech": write_librispeech}[source](tmp_path)
    _deny(monkeypatch, tmp_path / name)
    with pytest.raises(DataError) as err:
        data.load(source, path=str(tmp_path))
    verb = "cannot list the directory" if source == "librispeech" and not name.endswith(".txt") else "cannot read"
    assert str(err.value).startswith(f"{tmp_path / name}: {verb}: permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files without permission")
def test_permission_denied_for_real(tmp_path):
    root, _ = write_stl10(tmp_path)
    (root / "class_names.txt").chmod(0)
    with pytest.raises(DataError, match=r"class_names\.txt: cannot read: permission denied"):
        data.load("stl10", path=str(root), split="train")


# -- CIFAR meta and labels of the wrong type

def test_cifar_meta_and_labels_of_the_wrong_type(tmp_path):
    root, _, _ = write_cifar10(tmp_path)
    meta = root / "batches.meta"
    for names, what in ((5, "is a int"), (b"airplane", "is a bytes"), ([], "is 0 entries"),
                        ([b"x"] * 101, "is 101 entries"), ([b"a", 7], "entry 1 is a int"),
                        ([b"a", b"x" * 201], "entry 1 is 201 characters long"), ([b"\xff"], "entry 0 = b'\\xff' is not UTF-8")):
        meta.write_bytes(pickle.dumps({b"label_names": names}))
        with pytest.raises(DataError) as err:
            data.load("cifar10", path=str(root))
        assert str(err.value).startswith(f"{meta}: b'label_names' {what}"), str(err.value)
    write_cifar10(tmp_path / "again")
    meta.write_bytes((tmp_path / "again" / "cifar-10-batches-py" / "batches.meta").read_bytes())
    f = root / "data_batch_1"
    batch = pickle.loads(f.read_bytes())
    for labels, what in ((5, "is a int, expected 4 integer labels"), ({0: 1}, "is a dict"),
                         ([0, 1, "2", 3], "entry 2 is a str"), ([0, 1, 2.0, 3], "entry 2 is a float"),
                         ([0, 1, 2**70, 3], f"entry 2 is {2**70}"), ([0, True, 1, 2], "entry 1 is True"),
                         ([[0], [1], [2], [3]], "entry 0 is a list"), (np.zeros((4, 1), np.int64), "has shape (4, 1)"),
                         (np.zeros(4), "has shape (4,) float64")):
        batch[b"labels"] = labels
        f.write_bytes(pickle.dumps(batch))
        with pytest.raises(DataError) as err:
            data.load("cifar10", path=str(root))
        assert str(err.value).startswith(f"{f}: b'labels' {what}"), str(err.value)
    batch[b"labels"] = np.array([0, 1, 2, 3], np.int16)          # an integer array is fine
    f.write_bytes(pickle.dumps(batch))
    assert data.load("cifar10", path=str(root)).labels[:4].tolist() == [0, 1, 2, 3]


# -- CIFAR pickles that ask for more memory than they hold

GIB_496 = 5_325_000_000            # 4.96 GiB


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _long(v: int) -> bytes:
    b = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _bytes(b: bytes) -> bytes:
    return b"C" + bytes([len(b)]) + b


def huge_reconstruct() -> bytes:
    """``_reconstruct(ndarray, (4.96 GiB,), 'b')`` as a batch's data: numpy would allocate it at once."""
    return (b"\x80\x03}" + _bytes(b"data") + _global("numpy.core.multiarray", "_reconstruct")
            + _global("numpy", "ndarray") + _long(GIB_496) + b"\x85" + _bytes(b"b") + b"\x87R" + b"s.")


def huge_dtype_reconstruct() -> bytes:
    """A dtype made a 4.96 GiB sub-array by its state (BUILD), then ``_reconstruct`` of one element of it."""
    u1 = _global("numpy", "dtype") + _str("u1") + b"\x89\x88\x87R"
    dtype = (u1 + b"(K\x03" + _str("|") + u1 + _long(70000) + _long(GIB_496 // 70000) + b"\x86\x86NN"
             + b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"\x80\x03}" + _bytes(b"data") + _global("numpy.core.multiarray", "_reconstruct")
            + _global("numpy", "ndarray") + b"K\x01\x85" + dtype + b"\x87R" + b"s.")


def encode_chain(levels: int = 31) -> bytes:
    """``_codecs.encode(... _codecs.encode(b"xx", "hex") ..., "hex")``: doubles ``levels`` times (4 GiB)."""
    body = _global("_codecs", "encode") + b"q\x01" + _str("hex") + b"q\x02" + b"0"   # memoize both, pop 'hex'
    body += b"h\x01" * (levels - 1) + _bytes(b"xx") + b"h\x02\x86R" + b"h\x02\x86R" * (levels - 1)
    return b"\x80\x03}" + _bytes(b"data") + body + b"s."


def shared_nested_list() -> bytes:
    """Labels of 1000 references to one list of 1000 references to one list of 1000 ints: 10^9 labels."""
    inner = list(range(1000))
    middle = [inner] * 1000
    return pickle.dumps({b"labels": [middle] * 1000, b"data": np.zeros((4, 3072), np.uint8)}, protocol=2)


def self_holding_list() -> bytes:
    outer = []
    outer.append(outer)
    return pickle.dumps({b"labels": outer, b"data": np.zeros((4, 3072), np.uint8)}, protocol=2)


_CHILD = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))      # a net: a regression fails, not the machine
    from neuroplastic import data
    try:
        data.load("cifar10", path=sys.argv[1])
        error = None
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"error": error, "peak_mib": peak / 1024}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
@pytest.mark.parametrize("make, expected", [
    (huge_reconstruct, "DataError: {f}: refused: an array of 5325000000 bytes requested, larger than the"),
    (huge_dtype_reconstruct, "DataError: {f}: refused to unpickle the dtype dtype(('u1', (70000, 76071)))"),
    (encode_chain, "DataError: {f}: refused to unpickle _codecs.encode(..., 'hex')"),
    (shared_nested_list, "DataError: {f}: refused: containers of more than 1000000 elements (counting shared"),
    (self_holding_list, "DataError: {f}: refused to unpickle a container that holds itself"),
])
def test_cifar_pickle_cannot_ask_for_more_than_it_holds(tmp_path, make, expected):
    root, _, _ = write_cifar10(tmp_path)
    f = root / "data_batch_2"
    f.write_bytes(make())
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["error"] is not None and result["error"].startswith(expected.format(f=f)), result["error"]
    assert result["peak_mib"] < 500, result


def test_cifar_malicious_pickles_are_small():
    assert len(huge_reconstruct()) < 250 and len(huge_dtype_reconstruct()) < 250 and len(encode_chain()) < 250
    assert len(shared_nested_list()) < 100_000


def test_cifar_bounded_unpickler_reads_every_protocol(tmp_path):
    """Arrays, scalars and bytes pickled at protocols 2 to 5 load as they were."""
    x = np.arange(24, dtype=np.uint8).reshape(2, 12)
    for protocol in (2, 3, 4, 5):
        obj = {b"data": x, "f": np.asfortranarray(x.astype(np.float32)), b"n": np.int64(7), b"b": b"\x00\xff",
               b"l": [1, 2], b"t": (1.5, None), b"s": "caf\u00e9"}
        (tmp_path / "p").write_bytes(pickle.dumps(obj, protocol=protocol))
        d = cifar.unpickle(tmp_path / "p")
        np.testing.assert_array_equal(d[b"data"], x)
        np.testing.assert_array_equal(d["f"], x.astype(np.float32))
        assert d[b"n"] == 7 and d[b"b"] == b"\x00\xff" and d[b"l"] == [1, 2] and d[b"t"] == (1.5, None)
        assert d[b"s"] == "caf\u00e9"
    (tmp_path / "p").write_bytes(pickle.dumps({b"x": np.zeros(2, object)}))
    with pytest.raises(DataError, match=r"refused to unpickle the dtype dtype\('O'\)|refused to unpickle the global"):
        cifar.unpickle(tmp_path / "p")


def test_cifar_file_larger_than_any_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_FILE_BYTES", 1000)
    root, _, _ = write_cifar10(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_1: \d+ bytes, larger than any CIFAR batch \(1000 bytes at most"):
        data.load("cifar10", path=str(root))


# -- lazily read images are read once per batch when cut into glimpses

class _Stimulus:
    patch, stride, scan = 16, 16, "raster"


def test_glimpses_of_a_lazy_set_read_each_image_once(tmp_path, monkeypatch):
    from neuroplastic.stimuli import glimpse_sequences, glimpses
    from neuroplastic.stimuli.glimpses import Glimpses

    _, images = write_stl10(tmp_path, n_unlabeled=7)
    ds = data.load("stl10", path=str(tmp_path), split="unlabeled")
    reads = []
    real = RecordFile._read
    monkeypatch.setattr(RecordFile, "_read", lambda self, index: reads.append(len(index)) or real(self, index))
    full = luma(images["unlabeled"]).astype(np.float32)
    expected = np.stack([full[:, r:r + 16, c:c + 16].reshape(7, -1) for r in range(0, 81, 16) for c in range(0, 81, 16)],
                        axis=1)
    grid = glimpse_sequences(ds, _Stimulus())                 # small: cut into memory, every image read once
    assert isinstance(grid.patches, np.ndarray) and sum(reads) == 7
    np.testing.assert_allclose(grid.patches, expected, atol=1e-6)

    reads.clear()
    monkeypatch.setattr(glimpses, "EAGER_BYTES", 0)             # large: stays lazy, nothing read yet
    lazy = glimpse_sequences(ds, _Stimulus()).patches
    assert isinstance(lazy, Glimpses) and lazy.shape == (7, 36, 256) and reads == []
    np.testing.assert_allclose(lazy[[5, 1, 5]], expected[[5, 1, 5]], atol=1e-6)
    assert reads == [2]                                        # one read of the two distinct images
    as64 = lazy.astype("float64")                              # what an engine does: still lazy
    assert isinstance(as64, Glimpses) and as64[0].dtype == np.float64
    image, position = np.array([0, 0, 3, 6]), np.array([0, 35, 2, 2])
    np.testing.assert_allclose(lazy[image, position], expected[image, position], atol=1e-6)   # numpy's pairing
    np.testing.assert_allclose(lazy[2:4, :, 7], expected[2:4, :, 7], atol=1e-6)
    again = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(again[1:3], lazy[1:3])


def test_time_windows_of_a_lazy_set(tmp_path, monkeypatch):
    from neuroplastic.stimuli import glimpses, time_windows
    from neuroplastic.stimuli.glimpses import Glimpses

    waves = write_librispeech(tmp_path)
    ds = librispeech.load(tmp_path, seconds=0.5, segments=0)
    eager = time_windows(ds.samples, 4000, 2000)
    monkeypatch.setattr(glimpses, "EAGER_BYTES", 0)
    lazy = time_windows(ds.samples, 4000, 2000)
    assert isinstance(eager.patches, np.ndarray) and isinstance(lazy.patches, Glimpses)
    assert lazy.patches.shape == eager.patches.shape == (8, 3, 4000)
    np.testing.assert_array_equal(lazy.patches[:], eager.patches)
    np.testing.assert_array_equal(eager.patches[0, 1], waves["19-198-0001"][2000:6000])
    with pytest.raises(SettingError, match=r"patch = 9000 is longer than the samples"):
        time_windows(ds.samples, 9000, 100)


_STL_CHILD = textwrap.dedent("""
    import json, sys
    from neuroplastic import data
    from neuroplastic.stimuli import glimpse_sequences

    class Stimulus:
        patch, stride, scan = 16, 16, "raster"

    ds = data.load("stl10", path=sys.argv[1], split="unlabeled")
    grid = glimpse_sequences(ds, Stimulus())
    batch = grid.patches[:32]
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"type": type(grid.patches).__name__, "shape": list(grid.patches.shape), "peak_mib": peak / 1024}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
def test_dense_glimpses_of_stl10_unlabeled_stay_lazy(tmp_path):
    """20000 images (a sparse file of 553 MB): their 737 MB of float32 and 737 MB of glimpses are never held."""
    root = tmp_path / "stl10_binary"
    root.mkdir()
    (root / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    with open(root / "unlabeled_X.bin", "wb") as fh:
        fh.truncate(20000 * STL_BYTES)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = _STL_CHILD.replace("from neuroplastic.stimuli import glimpse_sequences",
                              "from neuroplastic.stimuli import glimpse_sequences, glimpses\n"
                              "glimpses.EAGER_BYTES = 256 << 20")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["type"] == "Glimpses" and result["shape"] == [20000, 36, 256]
    assert result["peak_mib"] < 300, result


# -- view augmentations that do not fit the images

@pytest.mark.parametrize("crop_pad, blur, key", [
    (5000, 0.0, "stimulus.crop_pad"), (10**9, 0.0, "stimulus.crop_pad"), (-1, 0.0, "stimulus.crop_pad"),
    (1.5, 0.0, "stimulus.crop_pad"), (1, 1e300, "stimulus.blur"), (1, float("inf"), "stimulus.blur"),
    (1, float("nan"), "stimulus.blur"), (1, 33.0, "stimulus.blur"), (1, -0.5, "stimulus.blur"),
])
def test_view_settings_that_do_not_fit(crop_pad, blur, key):
    from neuroplastic.data.augment import augment, check_views

    with pytest.raises(SettingError) as err:
        check_views((32, 32), crop_pad, blur)
    assert err.value.key == key and "32 x 32 images" in str(err.value)
    x = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    with pytest.raises(SettingError) as err:                  # augment refuses them too, before allocating
        augment(x, np.random.default_rng(0), crop_pad=crop_pad, blur_sigma=blur)
    assert err.value.key == key


def test_view_settings_that_fit():
    from neuroplastic.data.augment import augment, check_views

    check_views((5, 32, 32), 32, 32.0)                        # a batch's shape; the image side is allowed
    check_views((8, 12), 0, 0)
    x = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    y = augment(x, np.random.default_rng(0), crop_pad=8, blur_sigma=8.0)
    assert y.shape == x.shape and np.isfinite(y).all()


# -- colour ([data] colour = "rgb"): the bytes / 255, rows x columns x channels

def test_stl10_rgb_is_the_bytes_over_255_channels_last_and_lazy(tmp_path):
    root, images = write_stl10(tmp_path, n_unlabeled=5)
    raw = np.fromfile(root / "train_X.bin", np.uint8)
    raw[:STL_BYTES] = 0
    raw[stl_offset(0, 0, 5, 20)] = 255          # red, row 5, column 20
    raw[stl_offset(0, 2, 70, 3)] = 51           # blue, row 70, column 3
    raw.tofile(root / "train_X.bin")
    images["train"][0] = 0
    images["train"][0, 5, 20, 0], images["train"][0, 70, 3, 2] = 255, 51
    ds = data.load("stl10", path=str(tmp_path), split="train", colour="rgb")
    assert isinstance(ds.samples, RecordFile) and (ds.samples.shape, ds.samples.dtype) == ((3, 96, 96, 3), np.float32)
    im = ds.samples[0]
    assert im[5, 20, 0] == 1.0 and im[70, 3, 2] == np.float32(51 / 255)
    im[5, 20, 0] = im[70, 3, 2] = 0
    assert not im.any()                          # not at the transposed (20, 5) or (3, 70), nor another channel
    for split in ("train", "test", "unlabeled"):
        ds = data.load("stl10", path=str(root), split=split, colour="rgb")
        expected = (images[split] / 255).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(ds.samples), expected)
        assert np.asarray(ds.samples).flags.c_contiguous
    lazy = data.load("stl10", path=str(tmp_path), split="unlabeled", colour="rgb").samples
    full = (images["unlabeled"] / 255).astype(np.float32)
    for key in (-1, slice(1, 5, 2), [4, 1, 4], (2, slice(10, 12), 7), ([1, 3], 5, 6, 1)):
        np.testing.assert_array_equal(lazy[key], full[key], err_msg=str(key))
    sub = data.load("stl10", path=str(tmp_path), split="unlabeled", colour="rgb", max_samples=2, seed=3)
    assert isinstance(sub.samples, np.ndarray) and sub.samples.shape == (2, 96, 96, 3)
    grey = data.load("stl10", path=str(tmp_path), split="unlabeled")          # grey is still the default
    np.testing.assert_allclose(np.asarray(grey.samples), luma(images["unlabeled"]), atol=1e-6)


def test_cifar_rgb_is_the_bytes_over_255_channels_last(tmp_path):
    root, rgb, labels = write_cifar10(tmp_path)
    batch = pickle.loads((root / "data_batch_1").read_bytes())
    batch[b"data"][0] = 0
    batch[b"data"][0, 5 * 32 + 20] = 255          # red plane, row 5, column 20
    batch[b"data"][0, 1024 + 30 * 32 + 1] = 17    # green plane, row 30, column 1
    (root / "data_batch_1").write_bytes(pickle.dumps(batch))
    rgb[0] = 0
    rgb[0, 5, 20, 0], rgb[0, 30, 1, 1] = 255, 17
    ds = data.load("cifar10", path=str(tmp_path), split="train", colour="rgb")
    assert (ds.samples.shape, ds.samples.dtype) == ((20, 32, 32, 3), np.float32) and ds.samples.flags.c_contiguous
    assert ds.samples[0, 5, 20, 0] == 1.0 and ds.samples[0, 30, 1, 1] == np.float32(17 / 255)
    assert np.count_nonzero(ds.samples[0]) == 2
    np.testing.assert_array_equal(ds.samples, (rgb[:20] / 255).astype(np.float32))
    assert ds.labels.tolist() == labels[:20]
    test = data.load("cifar10", path=str(root), split="test", colour="rgb")
    np.testing.assert_array_equal(test.samples, (rgb[20:] / 255).astype(np.float32))
    np.testing.assert_allclose(data.load("cifar10", path=str(root)).samples, luma(rgb[:20]), atol=1e-6)   # grey

    root100, rgb100 = write_cifar100(tmp_path)
    ds = data.load("cifar100", path=str(root100), split="test", label="coarse", colour="rgb")
    assert ds.labels.tolist() == [19, 0]
    np.testing.assert_array_equal(ds.samples, (rgb100[3:] / 255).astype(np.float32))
    with pytest.raises(ValueError, match="unknown colour 'rgba'; allowed: grey, rgb"):
        cifar.load_cifar100(root100, colour="rgba")                    # called directly, without the registry
    with pytest.raises(ValueError, match="unknown colour 'rgba'; allowed: grey, rgb"):
        stl10.load(tmp_path, colour="rgba")


@pytest.mark.parametrize("source, holds", [("digits", "grey images"), ("natural_images", "grey images"),
                                           ("vowels", "sound"), ("librispeech", "sound"),
                                           ("moving_shapes", "grey clips"), ("ucf101", "grey clips")])
def test_sources_without_colour_refuse_rgb(tmp_path, source, holds):
    with pytest.raises(SettingError) as err:                 # before any file is looked for
        data.load(source, path=str(tmp_path / "nowhere"), colour="rgb")
    assert err.value.key == "data.colour"
    assert str(err.value) == (f"[data] colour = 'rgb': {source} holds {holds}; allowed with it: 'grey' "
                              "(sources with 'rgb': cifar10, cifar100, stl10)")
    assert data.DATASETS[source].colours == ("grey",)
    assert all(data.DATASETS[s].colours == ("grey", "rgb") for s in ("cifar10", "cifar100", "stl10"))
