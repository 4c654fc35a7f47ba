"""What a run tells while it works: status lines on stderr (none with --quiet), -v's log lines, and run.log."""
from __future__ import annotations

import gc
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from neuroplastic.cli import _parser, main
from neuroplastic.engines.numpy.engine import NumpyEngine
from neuroplastic.progress import phase, showing
from neuroplastic.protocol import load
from neuroplastic.results import Run

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
TINY = ["data.max_samples=120", "train.epochs=3", "model.layers=[8,8]", "train.batch_size=16"]
SETS = [a for o in TINY for a in ("--set", o)]
PACKAGE = logging.getLogger("neuroplastic")


def _run(tmp_path, capsys, *flags: str) -> tuple[int, str, str, Path]:
    code = main(["run", str(QUICKSTART), "--out", str(tmp_path), *flags, *SETS])
    out, err = capsys.readouterr()
    return code, out, err, Run.path_for(tmp_path, load(QUICKSTART, TINY))


def test_quiet_prints_nothing_on_stderr(tmp_path, capsys):
    code, out, err, _ = _run(tmp_path, capsys, "--quiet")
    assert code == 0, err
    assert err == ""
    assert "trained" in out


def test_without_quiet_every_phase_shows_on_stderr_and_stdout_stays_the_result(tmp_path, capsys):
    code, out, err, _ = _run(tmp_path, capsys)
    assert code == 0, err
    for status in ("loading the data (digits)", "preparing the stimulus", "probe features (trained)",
                   "probe features (random)", "linear probe (trained and random)", "linear probe layer 2",
                   "summary figure"):
        assert status in err, status
    assert "[00:0" in err, "each status shows its elapsed time"
    assert "probe features" not in out and "loading" not in out


def test_run_log_keeps_the_phases_with_timestamps(tmp_path, capsys):
    code, _, err, directory = _run(tmp_path, capsys, "--quiet")
    assert code == 0, err
    lines = (directory / "run.log").read_text().splitlines()
    text = "\n".join(lines)
    assert lines[0].split(" INFO neuroplastic.results: run ")[1].startswith(f"{directory} opened (new)")
    assert lines[0][:4].isdigit() and lines[0][10] == " ", "each line starts with its date and time"
    for line in ("epoch 3/3: done in", "probe features (trained): done in", "probe features (random): done in",
                 "linear probe layer 1: done in", "summary figure: done in", f"run {directory} closed: finished"):
        assert line in text, line


def test_a_failed_run_keeps_its_log_and_a_resume_appends_to_it(tmp_path, capsys, monkeypatch):
    epoch = NumpyEngine.epoch

    def interrupted_in_epoch_2(self, model, e, rng, tick):
        if e == 2:
            raise KeyboardInterrupt
        return epoch(self, model, e, rng, tick)

    monkeypatch.setattr(NumpyEngine, "epoch", interrupted_in_epoch_2)
    code, _, err, directory = _run(tmp_path, capsys, "--quiet")
    assert code == 130, err
    log = (directory / "run.log").read_text()
    assert "epoch 1/3: done in" in log and "epoch 2/3" not in log
    assert "closed: failed" in log.splitlines()[-1]
    monkeypatch.setattr(NumpyEngine, "epoch", epoch)
    code, _, err, _ = _run(tmp_path, capsys, "--quiet", "--resume")
    assert code == 0, err
    again = (directory / "run.log").read_text()
    assert again.startswith(log), "appended, not rewritten"
    added = again[len(log):]
    assert "opened (resumed, 1 time(s))" in added and "from epoch 1" in added
    assert "epoch 2/3: done in" in added and "probe features (trained): done in" in added
    assert added.rstrip().splitlines()[-1].endswith("s in all") and "closed: finished" in added


def test_a_closed_run_log_is_detached_and_two_runs_keep_apart(tmp_path):
    before = (list(PACKAGE.handlers), PACKAGE.level)
    first = Run.open(tmp_path, load(QUICKSTART, ["seed=1"]))
    logging.getLogger("neuroplastic.engines.base").info("only in the first")
    first.close()
    assert (list(PACKAGE.handlers), PACKAGE.level) == before, "the handler and the logger's level are restored"
    logging.getLogger("neuroplastic.engines.base").info("after the first closed")
    second = Run.open(tmp_path, load(QUICKSTART, ["seed=2"]))
    logging.getLogger("neuroplastic.engines.base").info("only in the second")
    second.close()
    one, two = ((run.directory / "run.log").read_text() for run in (first, second))
    assert "only in the first" in one and "only in the first" not in two
    assert "only in the second" in two and "only in the second" not in one
    assert "after the first closed" not in one + two


def test_runs_open_at_once_in_two_threads_log_only_their_own(tmp_path):
    runs = {}

    def work(seed: int, ready: threading.Barrier) -> None:
        run = Run.open(tmp_path, load(QUICKSTART, [f"seed={seed}"]))
        ready.wait()                                        # both open now
        logging.getLogger("neuroplastic.engines.base").info("work of seed %d", seed)
        ready.wait()
        run.close()
        runs[seed] = run.directory

    ready = threading.Barrier(2)
    threads = [threading.Thread(target=work, args=(seed, ready)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for seed, other in ((1, 2), (2, 1)):
        text = (runs[seed] / "run.log").read_text()
        assert f"work of seed {seed}" in text and f"work of seed {other}" not in text


def test_a_run_dropped_without_close_detaches_its_log(tmp_path):
    handlers = list(PACKAGE.handlers)
    run = Run.open(tmp_path, load(QUICKSTART, TINY))
    assert len(PACKAGE.handlers) == len(handlers) + 1
    del run
    gc.collect()
    assert PACKAGE.handlers == handlers


def test_a_phase_logs_its_start_and_its_end_and_shows_only_when_asked(capsys, caplog):
    caplog.set_level(logging.INFO, logger="neuroplastic")
    with showing(False), phase("quiet work", total=3) as advance:
        advance()
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError), showing(True), phase("broken work"):
        raise ValueError("no")
    assert "broken work" in capsys.readouterr().err
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "quiet work" and messages[1].startswith("quiet work: done in ")
    assert messages[3].startswith("broken work: failed in ")


def test_verbose_is_accepted_before_and_after_the_command():
    assert _parser().parse_args(["-v", "list"]).verbose == 1
    args = _parser().parse_args(["run", "p.toml", "-vv"])
    assert args.verbose + args.verbose_command == 2


def test_verbose_prints_the_phases_as_log_lines(tmp_path):
    exe = Path(sys.executable).with_name("neuroplastic")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "neuroplastic.cli"]
    proc = subprocess.run([*cmd, "run", str(QUICKSTART), "--out", str(tmp_path), "--quiet", "-v", *SETS],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    for line in ("neuroplastic.engines.prepare: loading the data (digits): done in",
                 "neuroplastic.engines.base: epoch 1/3: done in", "neuroplastic.engines.base: probe features (trained)",
                 "neuroplastic.engines.base: linear probe (trained and random): done in"):
        assert any(l.startswith(line) for l in lines), line
    assert "\r" not in proc.stderr, "--quiet: log lines only, no status line"
    assert "neuroplastic" not in proc.stdout.split("layer")[0], "stdout holds only the result"


# -- Brian2 ------------------------------------------------------------------------------------------------
SPIKING = ROOT / "protocols" / "clapp_digits_spiking.toml"
TINY_SPIKING = ["data.max_samples=20", "train.epochs=1", "model.layers=[6, 4]", "stimulus.glimpse_ms=5",
                "engine.dt_ms=0.5", "evaluate.folds=0", "evaluate.presentations=1"]


def test_a_spiking_run_shows_its_probe_and_fidelity_phases(tmp_path, capsys):
    pytest.importorskip("brian2")
    code = main(["run", str(SPIKING), "--out", str(tmp_path), "--device", "runtime",
                 *(a for o in TINY_SPIKING for a in ("--set", o))])
    out, err = capsys.readouterr()
    assert code == 0, err
    for status in ("probe features (trained)", "spiking presentations of 20 images: ", "probe features (random)",
                   "fidelity: a frozen-weight spiking epoch", "linear probe (rates)"):
        assert status in err, status
    log = (Run.path_for(tmp_path, load(SPIKING, [*TINY_SPIKING, 'engine.device="runtime"'])) / "run.log").read_text()
    assert "fidelity: a frozen-weight spiking epoch against the rate rule: done in" in log
    assert log.count("spiking presentations of 20 images: done in") == 2


@pytest.mark.slow
def test_a_cpp_build_says_it_compiles_then_that_it_reuses_the_cache(tmp_path, monkeypatch):
    """Two --build-only of one network: the first compiles (about a minute), the second reuses the build."""
    from neuroplastic.engines.brian.device import check_compiler

    pytest.importorskip("brian2")
    check_compiler()
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))
    exe = Path(sys.executable).with_name("neuroplastic")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "neuroplastic.cli"]
    argv = [*cmd, "run", str(SPIKING), "--build-only", "-v", *(a for o in TINY_SPIKING for a in ("--set", o))]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    assert "compiling clapp_digits_spiking for the cpp device (first build takes about a minute; cached " \
           "afterwards)" in first.stderr
    assert "cpp build of clapp_digits_spiking: not cached yet" in first.stderr
    assert any(l.startswith("neuroplastic.engines.brian.device: compiling clapp_digits_spiking") and " done in " in l
               for l in first.stderr.splitlines())
    second = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
    assert "cpp build of clapp_digits_spiking: cached, reused" in second.stderr
    assert "reusing the cached cpp build of clapp_digits_spiking" in second.stderr
    assert "compiling clapp_digits_spiking" not in second.stderr
