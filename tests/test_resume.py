"""A run killed at any instant resumes from its last checkpoint to the same bits as an uninterrupted run."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.protocol import load
from neuroplastic.engines import get_engine
from neuroplastic.engines.base import train
from neuroplastic.results import Run

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("neuroplastic")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "neuroplastic.cli"]


def _checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "__state__"}
        state = json.loads(str(data["__state__"]))
    return arrays, state


def _assert_same_results(a: Path, b: Path, epochs: int) -> None:
    """Last checkpoint bit-identical, metrics.csv byte-identical, summary.json probes identical."""
    name = f"epoch_{epochs:04d}.npz"
    arrays_a, state_a = _checkpoint(a / "checkpoints" / name)
    arrays_b, state_b = _checkpoint(b / "checkpoints" / name)
    assert sorted(arrays_a) == sorted(arrays_b)
    assert any(k.startswith("param/") for k in arrays_a) and any(k.startswith("opt/") for k in arrays_a)
    for key in arrays_a:
        assert arrays_a[key].dtype == arrays_b[key].dtype, key
        assert np.array_equal(arrays_a[key], arrays_b[key]), f"{key} differs"
    assert state_a == state_b, "RNG state, optimiser step and metrics history"
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    if (a / "summary.json").exists() or (b / "summary.json").exists():
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sa["probe"] == sb["probe"] and sa.get("probe_random") == sb.get("probe_random")


# -- a real process, really killed -----------------------------------------------------------------
# Tiny, but ~25 ms an epoch: after epoch 2 the run has about a second left, ample time to kill it.
KILL_EPOCHS = 40
KILL = ["data.max_samples=600", "model.layers=[16,16]", "train.batch_size=16", f"train.epochs={KILL_EPOCHS}",
        "train.checkpoint_every=1"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [*_console_script(), "run", str(QUICKSTART), "--out", str(out), "--quiet",
           *(a for o in KILL for a in ("--set", o)), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _newest_epoch(directory: Path) -> int:
    found = sorted((directory / "checkpoints").glob("epoch_*.npz"))
    return int(found[-1].stem.split("_")[1]) if found else -1


def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    protocol = load(QUICKSTART, KILL)
    directory = Run.path_for(tmp_path / "killed", protocol)
    started = []
    try:
        victim = _start(tmp_path / "killed")
        started.append(victim)
        deadline = time.monotonic() + 60
        while _newest_epoch(directory) < 2:                # i.e. checkpoints/epoch_0002.npz is written
            assert victim.poll() is None, f"the run ended before it could be killed: {victim.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 60 s"
            time.sleep(0.002)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL

        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["status"] == "running", "the run was really interrupted"
        killed_at = _newest_epoch(directory)
        assert 2 <= killed_at < KILL_EPOCHS
        assert not (directory / "summary.json").exists()

        resumed = _start(tmp_path / "killed", "--resume")
        started.append(resumed)
        # meanwhile, the same protocol uninterrupted into another --out (in this process, on the other core)
        reference = Run.open(tmp_path / "reference", protocol)
        reference.finish(train(get_engine("numpy"), protocol, reference, progress=False))
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed"] == 1
    assert "--resume" in manifest["command"]
    _assert_same_results(directory, reference.directory, KILL_EPOCHS)
    summary = json.loads((reference.directory / "summary.json").read_text())
    for layer, acc in summary["probe"].items():                  # and the printed table shows them
        assert f"{layer:>5}  {acc:8.3f}  {summary['probe_random'][layer]:8.3f}" in out.splitlines()


# -- the same, without processes or timing ----------------------------------------------------------
TINY = ["data.max_samples=120", "train.epochs=4", "model.layers=[8,8]", "train.batch_size=16"]


class KeepAllRun(Run):
    """A run that keeps every checkpoint, so that it can be cut back to any epoch."""

    def save_checkpoint(self, epoch, arrays, state, keep=2):
        return super().save_checkpoint(epoch, arrays, state, keep=10**6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    protocol = load(QUICKSTART, TINY)
    run = KeepAllRun.open(tmp_path_factory.mktemp("reference"), protocol)
    run.finish(train(get_engine("numpy"), protocol, run, progress=False))
    return protocol, run.directory


@pytest.mark.parametrize("cut_after", [0, 1, 3])
def test_train_resumed_from_a_truncated_run_is_bit_identical(reference, tmp_path, cut_after):
    """Cut a finished run back to epoch k (as if killed after writing it) and train it again."""
    protocol, ref_dir = reference
    epochs = protocol.train.epochs
    assert sorted(p.name for p in (ref_dir / "checkpoints").iterdir()) == \
        [f"epoch_{e:04d}.npz" for e in range(epochs + 1)]

    directory = tmp_path / ref_dir.name
    shutil.copytree(ref_dir, directory)
    for later in range(cut_after + 1, epochs + 1):
        (directory / "checkpoints" / f"epoch_{later:04d}.npz").unlink()
    (directory / "metrics.csv").unlink()
    (directory / "summary.json").unlink()
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(status="running")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    kept = directory / "checkpoints" / f"epoch_{cut_after:04d}.npz"
    kept_stat = kept.stat().st_mtime_ns, kept.read_bytes()

    resumed = KeepAllRun.open(tmp_path, protocol, resume=True)
    assert resumed.latest_checkpoint()[0] == cut_after
    resumed.finish(train(get_engine("numpy"), protocol, resumed, progress=False))
    assert (kept.stat().st_mtime_ns, kept.read_bytes()) == kept_stat, "resumed, not started over"
    _assert_same_results(resumed.directory, ref_dir, epochs)
    assert json.loads((resumed.directory / "manifest.json").read_text())["resumed"] == 1


@pytest.mark.slow
def test_ten_sigkills_at_random_moments_then_resume_are_bit_identical(tmp_path):
    """Killed ten times at random instants (start-up, training, checkpoint, metrics, probe and feature
    writes), resumed each time: the same bits as an uninterrupted run, and no temporary file left."""
    epochs = 300                        # about 8 s of training: ten kills land inside it
    sets = [*KILL[:-2], f"train.epochs={epochs}", "train.checkpoint_every=1"]
    protocol = load(QUICKSTART, sets)
    out = tmp_path / "killed"
    directory = Run.path_for(out, protocol)
    cmd = [*_console_script(), "run", str(QUICKSTART), "--out", str(out), "--quiet", "--resume",
           *(a for o in sets for a in ("--set", o))]
    rng = np.random.default_rng(17)
    kills, starts = 0, 0
    while True:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        starts += 1
        assert starts < 40, "the run never finished"
        if kills < 10:
            time.sleep(rng.uniform(0.3, 2.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
                kills += proc.returncode == -signal.SIGKILL
                continue
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:         # finished now, or found finished (a kill may come just as a run finishes)
            break
        assert "Traceback" not in err, err
    reference = Run.open(tmp_path / "reference", protocol)
    reference.finish(train(get_engine("numpy"), protocol, reference, progress=False))
    reference.close()
    assert kills == 10
    _assert_same_results(directory, reference.directory, epochs)
    features, ref_features = np.load(directory / "features.npz"), np.load(reference.directory / "features.npz")
    assert sorted(features.files) == sorted(ref_features.files)
    assert all(np.array_equal(features[k], ref_features[k]) for k in features.files)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"
    assert Run.load(directory).manifest["status"] == "finished"
