"""The `neuroplastic` command as a user types it: list, validate, run (with and without --quiet)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from neuroplastic.cli import main
from neuroplastic.data import DATASETS
from neuroplastic.protocol import MODELS_DIR, PROTOCOLS_DIR, load
from neuroplastic import runner
from neuroplastic.results import Run

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
TINY = ["data.max_samples=120", "train.epochs=3", "model.layers=[8,8]", "train.batch_size=16"]
SETS = [a for o in TINY for a in ("--set", o)]


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("neuroplastic")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "neuroplastic.cli"]


def _neuroplastic(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*_console_script(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_list_shows_every_protocol_and_model_with_its_description():
    proc = _neuroplastic("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "protocols:" in lines and "models:" in lines
    protocols, models = sorted(PROTOCOLS_DIR.glob("*.toml")), sorted(MODELS_DIR.glob("*.toml"))
    assert protocols and models
    section = {"protocols:": protocols, "models:": models}
    for header, files in section.items():
        start = lines.index(header) + 1
        body = lines[start:start + len(files)]
        for path, line in zip(files, body):
            description = tomllib.loads(path.read_text()).get("description", "")
            assert description, f"{path} has no description"
            assert line.split()[0] == path.stem and line.rstrip().endswith(description), line


def test_validate_every_shipped_protocol():
    """All pass the checks that need no data; those that read built-in data pass every check, and the
    papers' protocols, whose data sets are not on this machine, are refused for that reason alone."""
    files = sorted(PROTOCOLS_DIR.glob("*.toml"))
    proc = _neuroplastic("validate", "--skip-data", *files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for path in files:
        p = load(path)
        assert f"ok      {path}  ({p.name}, hash {p.digest()[:10]})" in proc.stdout
    on_disk = [path for path in files if DATASETS[load(path).data.source].needs_path]
    assert on_disk, "the papers' protocols read their data sets from disk"
    proc = _neuroplastic("validate", *files, timeout=300)
    assert proc.returncode == 2
    refused = [line for line in proc.stderr.splitlines() if line.startswith("invalid ")]
    assert len(refused) == len(on_disk), proc.stderr
    for path, line in zip(on_disk, refused):
        assert line.startswith(f"invalid {path}: [data] path") and "set it to the directory" in line, line


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny protocol run by the real executable and, meanwhile, in-process with --quiet."""
    root = tmp_path_factory.mktemp("cli")
    directory = {mode: Run.path_for(root / mode, load(QUICKSTART, TINY)) for mode in ("loud", "quiet")}
    cmd = [*_console_script(), "run", str(QUICKSTART), "--out", str(root / "loud"), *SETS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", str(QUICKSTART), "--out", str(root / "quiet"), "--quiet", *SETS])
        quiet = (code, out.getvalue(), err.getvalue(), directory["quiet"])
        lout, lerr = proc.communicate(timeout=120)
        loud = (proc.returncode, lout, lerr, directory["loud"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return {"loud": loud, "quiet": quiet}


def _table(stdout: str) -> dict[str, tuple[float, float]]:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["layer", "trained", "random"])
    rows = {}
    for line in lines[header + 1:]:
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit():
            break
        rows[parts[0]] = (float(parts[1]), float(parts[2]))
    return rows


def test_run_prints_probe_table_and_writes_results(tiny_runs):
    code, out, err, directory = tiny_runs["loud"]
    assert code == 0, err
    assert f"run directory: {directory}" in out and f"results: {directory}" in out
    summary = json.loads((directory / "summary.json").read_text())
    table = _table(out)
    assert sorted(table) == ["1", "2"] == sorted(summary["probe"]) == sorted(summary["probe_random"])
    for layer, (trained, rand) in table.items():
        assert trained == round(summary["probe"][layer], 3)
        assert rand == round(summary["probe_random"][layer], 3)
        assert 0 <= trained <= 1 and 0 <= rand <= 1

    for name in ("manifest.json", "metrics.csv", "summary.json", "summary.png", "summary.pdf"):
        assert (directory / name).is_file() and (directory / name).stat().st_size > 0, name
    assert (directory / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (directory / "summary.pdf").read_bytes()[:5] == b"%PDF-"
    assert json.loads((directory / "manifest.json").read_text())["status"] == "finished"
    with open(directory / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "stage", "layer", "name", "value"]
    stages = {(r["stage"], r["name"]) for r in rows}
    assert stages == {("train", "loss"), ("train", "modulated"), ("probe", "accuracy"),
                      ("probe_random", "accuracy")}
    assert sorted({int(r["epoch"]) for r in rows if r["stage"] == "train"}) == [1, 2, 3]
    assert "batch" in err, "without --quiet a progress bar is shown (on stderr)"


def test_quiet_prints_no_progress_bar(tiny_runs):
    code, out, err, directory = tiny_runs["quiet"]
    assert code == 0, err
    assert "batch" not in err and "%|" not in err and "\r" not in err
    assert "run directory:" not in out
    assert _table(out) == _table(tiny_runs["loud"][1]), "same protocol, same results"
    assert (directory / "summary.pdf").is_file()


def test_interrupted_run_prints_the_full_command_to_resume_it(tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "my runs"                          # a space, to check the quoting
    argv = ["run", str(QUICKSTART), "--out", str(out_dir), "--quiet", *SETS]

    def interrupted(engine, protocol, run, progress=True, prepared=None):
        raise KeyboardInterrupt                            # Ctrl-C as training starts

    monkeypatch.setattr(runner, "train", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    directory = Run.path_for(out_dir, load(QUICKSTART, TINY))
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "interrupted"

    hint = err.split("continue with: ", 1)[1].strip()
    assert shlex.split(hint) == ["neuroplastic", *argv, "--resume"], "the hint repeats --out and every --set"
    resumed = Run.open(out_dir, load(QUICKSTART, TINY), resume=True)   # what that command does first
    assert resumed.directory == directory and resumed.manifest["resumed"] == 1
