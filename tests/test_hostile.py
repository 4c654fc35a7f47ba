"""A hostile or unlucky user: names that escape ``--out``, two processes on one run directory, damaged
state on disk, a machine that refuses writes, Ctrl-C at awkward moments, divergence that hides in
the optimiser. Each class has a test here; each failed on the code before it was closed.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import set_args

from neuroplastic import results, runner
from neuroplastic.cli import main
from neuroplastic.errors import RunBusy
from neuroplastic.protocol import load
from neuroplastic.results import Run, RunError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
TINY = ["data.max_samples=120", "train.epochs=3", "model.layers=[8,8]", "train.batch_size=16"]


def _cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _protocol_file(tmp_path: Path, name: str) -> Path:
    text = QUICKSTART.read_text().replace('name = "clapp_digits"', f"name = {json.dumps(name)}", 1)
    assert text != QUICKSTART.read_text()
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


# -- escape ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", ".hidden", "x" * 300, "nul\u0000name",
                                  "spa ce", ""])
def test_a_name_that_is_not_a_plain_file_name_is_refused_before_anything_is_written(tmp_path, capsys, name):
    path = _protocol_file(tmp_path, name)
    out = tmp_path / "box" / "runs"
    for argv in (["validate", path], ["run", path, "--out", out, *set_args(TINY)],
                 ["sweep", path, "--grid", "seed=1,2", "--out", out, "--quiet"]):
        code, _, err = _cli(argv, capsys)
        assert code == 2, (argv, err)
        assert "Traceback" not in err and str(path) in err and "name" in err, err
    assert _files(tmp_path) == ["p.toml"], "nothing is written, inside --out or outside it"


def test_an_escaping_name_given_with_set_is_refused_too(tmp_path, capsys):
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path / "runs", "--set", 'name="../../x"'], capsys)
    assert code == 2 and "plain file name" in err
    assert not any(tmp_path.iterdir())


# -- concurrency ------------------------------------------------------------------------------------------
def test_a_run_directory_in_use_is_refused_naming_its_holder(tmp_path, capsys):
    protocol = load(QUICKSTART, TINY)
    held = Run.open(tmp_path, protocol)
    try:
        for flags in ([], ["--resume"], ["--force"]):
            code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *flags, *set_args(TINY)], capsys)
            assert code == 2, (flags, err)
            assert f"in use by process {os.getpid()}" in err and "Traceback" not in err, err
        assert (held.directory / "manifest.json").is_file(), "--force did not delete the live run"
        with pytest.raises(RunBusy):
            Run.open(tmp_path, protocol, force=True)
    finally:
        held.close()
    assert Run.load(held.directory).manifest["status"] == "running"
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 0, err                      # released: the run continues


def test_simultaneous_runs_of_one_protocol_train_it_once(tmp_path):
    """Three processes start the same run at once: one trains, the others are refused while it runs or
    print its result once it has finished, none crashes."""
    argv = [sys.executable, "-m", "neuroplastic.cli", "run", str(QUICKSTART), "--out", str(tmp_path), "--quiet",
            *set_args([*TINY[:-1], "train.epochs=6", "train.batch_size=16"])]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    ended = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    errs = "\n".join(err for _, _, err in ended)
    assert "Traceback" not in errs, errs
    trained = [out for code, out, _ in ended if code == 0 and not out.startswith("already finished: ")]
    assert len(trained) == 1, ended
    # The others were refused because the directory was busy, or found it finished and printed its result.
    for code, out, err in ended:
        assert (code == 0 and "layer" in out) or (code == 2 and "in use by process" in err), (code, out, err)
    [directory] = [d for d in tmp_path.iterdir() if d.is_dir()]
    manifest = Run.load(directory).manifest
    assert manifest["status"] == "finished" and manifest.get("resumed", 0) == 0


# -- damaged state ----------------------------------------------------------------------------------------
@pytest.fixture
def cut_run(tmp_path, capsys):
    """A finished 3-epoch run whose manifest says ``running`` again: as if killed just before it finished."""
    assert main(["run", str(QUICKSTART), "--out", str(tmp_path), "--quiet", *set_args(TINY)]) == 0
    directory = Run.path_for(tmp_path, load(QUICKSTART, TINY))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["status"] = "running"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    return directory


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(cut_run, tmp_path, capsys, caplog, damage):
    finished_metrics = (cut_run / "metrics.csv").read_text()
    finished_features = dict(np.load(cut_run / "features.npz"))
    latest = cut_run / "checkpoints" / "epoch_0003.npz"
    blob = latest.read_bytes()
    latest.write_bytes({"truncate": blob[: len(blob) // 2], "empty": b"", "garbage": b"\x00" * 100}[damage])
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 0, err
    assert "epoch_0003.npz is damaged" in caplog.text and "using the one before it" in caplog.text
    assert (cut_run / "metrics.csv").read_text() == finished_metrics          # epoch 3 trained again, identically
    again = np.load(cut_run / "features.npz")
    assert all(np.array_equal(again[k], v) for k, v in finished_features.items())
    assert (cut_run / "checkpoints" / "epoch_0003.npz.damaged").is_file()
    np.load(cut_run / "checkpoints" / "epoch_0003.npz")["param/1/W"]          # rewritten intact


def test_a_damaged_manifest_is_rebuilt_on_resume_and_named_when_read(cut_run, tmp_path, capsys, caplog):
    (cut_run / "manifest.json").write_text('{"status": "runn')
    with pytest.raises(RunError, match="manifest.json: damaged"):
        Run.load(cut_run)
    code, _, err = _cli(["compare", cut_run, "--out", tmp_path / "cmp"], capsys)
    assert code == 2 and "manifest.json: damaged" in err and "Traceback" not in err
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(TINY)], capsys)
    assert code == 2 and "--resume" in err                     # its status is unknown: not overwritten unasked
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 0, err
    assert "manifest.json is damaged" in caplog.text
    assert Run.load(cut_run).manifest["status"] == "finished"


def test_stale_temporary_files_are_removed_when_a_run_is_opened(cut_run, tmp_path, capsys):
    stale = [cut_run / ".metrics.csv.abc123xy.tmp", cut_run / "checkpoints" / ".epoch_0003.npz.q1w2e3r4.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    mine = cut_run / "notes.tmp"                  # not a name our writer makes: left alone
    mine.write_text("keep")
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and mine.read_text() == "keep"


def test_files_are_synced_before_they_are_renamed(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    results.atomic_write(tmp_path / "x.json", "{}")
    assert calls[:2] == ["fsync", "replace"] and calls.count("fsync") == 2    # the file, then its directory


# -- divergence ---------------------------------------------------------------------------------------------
def test_divergence_in_the_optimiser_state_fails_the_run(tmp_path, capsys):
    """Adam at lr = 1e6: the squared gradients overflow while the weights stay finite; it used to 'finish'."""
    overrides = [*TINY, "rule.optimizer=adam", "rule.lr=1e6"]
    with np.errstate(all="ignore"):
        code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(overrides)], capsys)
    assert code == 1, err
    assert "training diverged in epoch" in err and "Lower [rule] lr (now 1e+06)" in err
    directory = Run.path_for(tmp_path, load(QUICKSTART, overrides))
    assert Run.load(directory).manifest["status"] == "failed"
    epoch, arrays, _ = Run.load(directory).latest_checkpoint()
    assert all(np.all(np.isfinite(a)) for a in arrays.values()), "the kept checkpoint is finite"


# -- the operating system refuses -------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_a_read_only_out_is_one_message(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        for argv in (["run", QUICKSTART, "--out", out, *set_args(TINY)],
                     ["sweep", QUICKSTART, "--grid", "seed=1,2", "--out", out, *set_args(TINY)]):
            code, _, err = _cli(argv, capsys)
            assert code == 1 and "not writable" in err and "Traceback" not in err, err
    finally:
        out.chmod(0o755)


def test_a_read_only_file_system_is_one_message(tmp_path, capsys, monkeypatch):
    """What root sees on a read-only mount (permissions do not stop root, EROFS does): exit 1, the
    environment's fault, for a run, a resume, a forced run and a sweep alike."""
    monkeypatch.setattr(results.os, "access", lambda path, mode: False)
    for extra in ([], ["--resume"], ["--force"]):
        code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path / "runs", *extra, *set_args(TINY)], capsys)
        assert code == 1 and "not writable" in err and "Traceback" not in err, err
    code, _, err = _cli(["sweep", QUICKSTART, "--grid", "seed=1,2", "--out", tmp_path / "runs", "--quiet",
                         *set_args(TINY)], capsys)
    assert code == 1 and "not writable (read-only file system or permissions)" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["file", "devnull"])
def test_out_that_is_not_a_directory_is_one_message(tmp_path, capsys, target):
    out = tmp_path / "plain" if target == "file" else Path(os.devnull)
    if target == "file":
        out.write_text("x")
    code, _, err = _cli(["run", QUICKSTART, "--out", out, *set_args(TINY)], capsys)
    assert code == 2 and "not a directory" in err and "Traceback" not in err, err


def test_a_full_disk_during_training_is_one_message_and_the_run_can_resume(tmp_path, capsys, monkeypatch):
    real = results.Run.save_checkpoint
    state = {"n": 0}

    def full(self, epoch, *args, **kwargs):
        state["n"] += 1
        if epoch == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / "checkpoints" / "x.tmp"))
        return real(self, epoch, *args, **kwargs)

    monkeypatch.setattr(results.Run, "save_checkpoint", full)
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(TINY)], capsys)
    assert code == 1, err
    assert "No space left on device" in err and "free space" in err and "Traceback" not in err
    directory = Run.path_for(tmp_path, load(QUICKSTART, TINY))
    assert Run.load(directory).manifest["status"] == "failed"
    monkeypatch.setattr(results.Run, "save_checkpoint", real)
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 0, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads through permissions")
def test_an_unreadable_protocol_is_one_message(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(QUICKSTART.read_text())
    path.chmod(0o000)
    try:
        code, _, err = _cli(["validate", path], capsys)
        assert code == 2 and str(path) in err and "cannot read" in err and "Traceback" not in err
    finally:
        path.chmod(0o644)


# -- interrupts ----------------------------------------------------------------------------------------------
def test_ctrl_c_while_preparing_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "prepare", interrupted)
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path / "runs", *set_args(TINY)], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_ctrl_c_while_the_summary_figure_is_drawn_ends_the_manifest(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "summary_figure", interrupted)
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", *set_args(TINY)], capsys)
    assert code == 130 and "--resume" in err and "Traceback" not in err
    directory = Run.path_for(tmp_path, load(QUICKSTART, TINY))
    manifest = Run.load(directory).manifest
    assert manifest["status"] == "failed" and manifest["error"] == "interrupted"
    monkeypatch.undo()
    code, _, err = _cli(["run", QUICKSTART, "--out", tmp_path, "--quiet", "--resume", *set_args(TINY)], capsys)
    assert code == 0 and Run.load(directory).manifest["status"] == "finished"


def test_sigint_to_a_real_process_exits_130_without_a_traceback(tmp_path):
    """A real SIGINT while the run trains: one line, exit 130, the manifest ended.

    Sent once the first epoch is done, when every module the loop imports lazily is loaded. Landing in
    code a C extension runs through CPython's C API (an import during the first batch, say), a
    KeyboardInterrupt makes CPython end the process by SIGINT at exit (-2) even after main() caught it
    and printed its line: 3 of 50 signals sent right after the epoch-0 checkpoint did (none of 50 after epoch 1).
    Interrupts before the run exists are covered in-process above. The child gets SIGINT's default action
    back: started in the background (`cmd &` in a script, nohup) the tests inherit SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler, as a user who ignores Ctrl-C wants."""
    argv = [sys.executable, "-m", "neuroplastic.cli", "run", str(QUICKSTART), "--out", str(tmp_path), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/checkpoints/epoch_0001.npz")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "--resume" in err
    [directory] = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert Run.load(directory).manifest["status"] == "failed"


# -- messages -----------------------------------------------------------------------------------------------
def test_a_set_with_a_line_break_is_refused_not_half_applied(tmp_path, capsys):
    code, _, err = _cli(["validate", QUICKSTART, "--set", "rule.lr=1e-3\nseed = 5"], capsys)
    assert code == 2 and "one value on one line" in err


def test_an_encoder_deeper_than_its_input_is_refused_before_the_run(tmp_path, capsys):
    """VGG-6 pools four times: an 8 x 8 patch would reach 0 x 0 maps inside the first epoch."""
    code, _, err = _cli(["run", "clapp_conv_quick", "--out", tmp_path, "--set", 'model.arch="vgg6"'], capsys)
    assert code == 2 and "[stimulus] patch = 8" in err and "at least 16 x 16" in err
    assert not any(tmp_path.iterdir())
