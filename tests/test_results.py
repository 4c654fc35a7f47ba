"""The results store: atomic files, finished runs protected, unfinished runs resumed only when asked,
divergence recorded, and a manifest that says exactly what ran."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import set_args

from neuroplastic import results
from neuroplastic.cli import main
from neuroplastic.protocol import load
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.results import Run, RunError, atomic_write

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
TINY = ["data.max_samples=120", "train.epochs=3", "model.layers=[8,8]", "train.batch_size=16"]


def _run_dir(out: Path, overrides: list[str] = TINY) -> Path:
    return Run.path_for(out, load(QUICKSTART, overrides))


def _cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run, made once; tests work on copies of its --out directory."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["run", str(QUICKSTART), "--out", str(out), "--quiet", *set_args(TINY)]) == 0
    return out


@pytest.fixture
def finished_copy(finished, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(finished, out)
    return out


# -- atomic writes ----------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, "old\n")
    atomic_write(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert sorted(tmp_path.iterdir()) == [path]


def test_failed_write_keeps_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, "old\n")
    with pytest.raises(TypeError):
        atomic_write(path, 12345)                      # neither str nor bytes: write() raises
    for exc in (RuntimeError("disk on fire"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with results._atomic(path, "w") as fh:       # noqa: SLF001 - the context every writer uses
                fh.write("half of the new cont")
                fh.flush()
                raise exc
    assert path.read_text() == "old\n"
    assert sorted(tmp_path.iterdir()) == [path], "no temporary file may be left behind"


def test_failed_rename_keeps_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    atomic_write(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(tmp_path.iterdir()) == [path]


def test_failed_checkpoint_keeps_previous_checkpoint(tmp_path, monkeypatch):
    run = Run(tmp_path / "run", {})
    run.save_checkpoint(1, {"param/W": np.arange(6.0).reshape(2, 3)}, {"epoch": 1})
    before = _snapshot(run.directory)

    def savez_then_die(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise MemoryError("killed while writing")

    monkeypatch.setattr(results.np, "savez", savez_then_die)
    with pytest.raises(MemoryError):
        run.save_checkpoint(2, {"param/W": np.ones((2, 3))}, {"epoch": 2})
    assert _snapshot(run.directory) == before
    assert not _leftovers(run.directory)
    epoch, arrays, state = run.latest_checkpoint()
    assert epoch == 1 and state == {"epoch": 1}
    np.testing.assert_array_equal(arrays["param/W"], np.arange(6.0).reshape(2, 3))


def test_written_files_follow_the_umask_not_owner_only(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "summary.json"
    atomic_write(path, "{}\n")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# -- finished and unfinished runs ---------------------------------------------------------------------
def test_finished_run_is_not_overwritten_without_force(finished_copy, capsys):
    """Running a finished run again prints its saved result and exits 0, touching nothing."""
    directory = _run_dir(finished_copy)
    before = _snapshot(directory)
    summary = json.loads((directory / "summary.json").read_text())
    for flag in ([], ["--resume"]):
        code, out, err = _cli(["run", QUICKSTART, "--out", finished_copy, "--quiet", *set_args(TINY), *flag], capsys)
        assert code == 0, err
        assert out.splitlines()[0] == f"already finished: {directory}"
        assert all(f"{layer:>5}  {acc:8.3f}" in out for layer, acc in summary["probe"].items()), out
        assert _snapshot(directory) == before, "a finished run's files must not change"


def test_force_reruns_a_finished_run_from_scratch(finished_copy, capsys):
    directory = _run_dir(finished_copy)
    metrics = (directory / "metrics.csv").read_bytes()
    (directory / "stale.txt").write_text("from an older run")
    code, out, err = _cli(["run", QUICKSTART, "--out", finished_copy, "--quiet", "--force", *set_args(TINY)], capsys)
    assert code == 0, err
    assert not (directory / "stale.txt").exists(), "--force starts over in an empty directory"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["status"] == "finished" and "--force" in manifest["command"]
    assert (directory / "metrics.csv").read_bytes() == metrics, "same protocol and seed, same numbers"


@pytest.mark.parametrize("status", ["running", "failed"])
def test_unfinished_run_needs_resume(tmp_path, capsys, status):
    protocol = load(QUICKSTART, TINY)
    run = Run.open(tmp_path, protocol)
    if status == "failed":
        run.fail("something broke")
    run.close()                              # as a killed or failed process leaves it: unlocked
    before = _snapshot(run.directory)
    code, out, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(TINY)], capsys)
    assert code == 2
    assert f"unfinished run ({status})" in err and "--resume" in err and "--force" in err
    assert _snapshot(run.directory) == before
    with pytest.raises(RunError, match="--resume"):
        Run.open(tmp_path, protocol)


def test_directory_without_manifest_is_not_taken_over(tmp_path, capsys):
    directory = _run_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_text("mine")
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 2 and "no manifest.json" in err
    assert (directory / "notes.txt").read_text() == "mine"


# -- divergence ----------------------------------------------------------------------------------------
def test_divergence_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    overrides = [*TINY, "rule.optimizer=sgd", "rule.lr=1e30"]
    with np.errstate(all="ignore"):
        code, out, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(overrides)], capsys)
    assert code == 1, err
    directory = _run_dir(tmp_path, overrides)
    for words in ("training diverged in epoch 1: NaN or infinite values in layer 1 loss", "last good checkpoint (epoch 0)",
                  str(directory), "Lower [rule] lr (now 1e+30)"):
        assert words in err
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "NaN or infinite" in manifest["error"]
    assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == ["epoch_0000.npz"]
    epoch, arrays, _ = Run.load(directory).latest_checkpoint()
    assert epoch == 0 and all(np.all(np.isfinite(a)) for a in arrays.values())
    assert not (directory / "summary.json").exists()


def test_divergence_after_some_epochs_keeps_that_epochs_checkpoint(tmp_path, capsys, monkeypatch):
    """Weights turn NaN in epoch 3 (injected): epoch 2's checkpoint and metrics stay, nothing of epoch 3."""
    saved = []
    original_save, original_train = Run.save_checkpoint, ClappStack.train_batch

    def save(self, epoch, arrays, state, keep=2):
        saved.append(epoch)
        return original_save(self, epoch, arrays, state, keep)

    def train_batch(self, *args, **kwargs):
        stats = original_train(self, *args, **kwargs)
        if saved and saved[-1] == 2:
            self.params["1/W"][0, 0] = np.nan
        return stats

    monkeypatch.setattr(Run, "save_checkpoint", save)
    monkeypatch.setattr(ClappStack, "train_batch", train_batch)
    code, out, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(TINY)], capsys)
    assert code == 1
    assert "in epoch 3" in err and "last good checkpoint (epoch 2)" in err
    directory = _run_dir(tmp_path)
    assert json.loads((directory / "manifest.json").read_text())["status"] == "failed"
    assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == ["epoch_0000.npz", "epoch_0001.npz",
                                                                            "epoch_0002.npz"]
    epoch, arrays, state = Run.load(directory).latest_checkpoint()
    assert epoch == 2 and all(np.all(np.isfinite(a)) for a in arrays.values())
    assert max(r["epoch"] for r in results.read_metrics(directory)) == 2
    assert max(r["epoch"] for r in state["metrics"]) == 2


# -- manifest -----------------------------------------------------------------------------------------
def test_manifest_records_what_ran(finished):
    protocol = load(QUICKSTART, TINY)
    directory = _run_dir(finished)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["protocol"] == protocol.as_dict()
    assert manifest["protocol_hash"] == protocol.digest()
    assert directory.name == f"{protocol.name}-{protocol.digest()[:10]}"
    assert manifest["seed"] == protocol.seed == 1
    assert {"python", "neuroplastic", "numpy", "scikit-learn"} <= set(manifest["versions"])
    assert "git_revision" in manifest
    assert manifest["git_revision"] is None or isinstance(manifest["git_revision"], str)
    assert manifest["status"] == "finished" and manifest["elapsed_s"] > 0
    assert manifest["model_file"] == str(protocol.model_path)
    # the command as given (not the test runner's sys.argv)
    assert manifest["command"] == ["neuroplastic", "run", str(QUICKSTART), "--out", str(finished), "--quiet",
                                   *set_args(TINY)]
    assert not _leftovers(directory)
