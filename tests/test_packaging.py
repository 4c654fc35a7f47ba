"""The package works when installed: shipped protocols, models and figure recipes found by name, anywhere.

The fast tests check the lookup (neuroplastic.resources) in this environment; the slow one builds a
wheel from a copy of the source tree, checks what it carries and runs ``neuroplastic`` from it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from neuroplastic import bench, resources
from neuroplastic.cli import main
from neuroplastic.protocol import MODELS_DIR, PROTOCOLS_DIR, load

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"protocols": resources.protocols, "models": resources.models, "figures": resources.figure_recipes}


def _listed_protocols(capsys) -> list[str]:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = lines[lines.index("protocols:") + 1:lines.index("models:")]
    return [line.split()[0] for line in body]


@pytest.mark.parametrize("kind", SHIPPED)
def test_resources_find_every_shipped_file(kind):
    found = SHIPPED[kind]()
    assert found, kind
    for name, path in found.items():
        assert path.is_file() and path.stem == name
        assert tomllib.loads(path.read_text()), path
    # In a checkout the shipped files are the top-level directories' files, all of them.
    assert sorted(found) == sorted(p.stem for p in (ROOT / kind).glob("*.toml"))
    assert {p.resolve() for p in found.values()} == {p.resolve() for p in (ROOT / kind).glob("*.toml")}


def test_protocol_module_keeps_its_directory_constants():
    assert isinstance(MODELS_DIR, Path) and isinstance(PROTOCOLS_DIR, Path)
    assert MODELS_DIR == resources.models_dir() and PROTOCOLS_DIR == resources.protocols_dir()
    assert resources.checkout_root() == ROOT and resources.benchmarks_dir() == ROOT / "benchmarks"


def test_validate_accepts_every_name_that_list_shows(capsys, tmp_path, monkeypatch):
    names = _listed_protocols(capsys)
    assert sorted(names) == sorted(resources.protocols())
    monkeypatch.chdir(tmp_path)             # names work from any directory
    assert main(["validate", "--skip-data", *names]) == 0
    out = capsys.readouterr().out
    for name in names:
        p = load(resources.protocols()[name])
        assert f"ok      {name}  ({p.name}, hash {p.digest()[:10]})" in out
    assert main(["validate", "clapp_digits.toml"]) == 0     # the file name of a shipped protocol works too


def test_an_unknown_name_is_one_error_listing_the_known_names(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "clapp_digit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'clapp_digits'?" in err
    assert all(name in err for name in resources.protocols())
    assert main(["run", "no_such_protocol", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuroplastic: error: no_such_protocol: ") and "clapp_speech_quick" in err
    assert not any(tmp_path.iterdir())
    # A missing path that ends in a shipped protocol's name says to run it by its name.
    assert main(["validate", "protocols/clapp_digits.toml"]) == 2
    assert "neuroplastic run clapp_digits" in capsys.readouterr().err


def test_bench_outside_a_checkout_says_the_scripts_are_not_shipped(capsys, monkeypatch):
    monkeypatch.setattr(bench, "BENCH_DIR", None)
    assert main(["bench", "sweep", "--quick"]) == 2
    assert "ship only with the source checkout" in capsys.readouterr().err


def _copy_source(dest: Path) -> Path:
    """The source tree as a checkout has it, without environments, builds and results."""
    skip = {".git", ".venv", "build", "dist", "runs", "bench", "comparison", ".pytest_cache"}

    def ignore(directory, names):
        top = Path(directory).resolve() == ROOT
        return [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in skip)
                or n == "_build"]

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    return dest


@pytest.mark.slow
def test_the_wheel_ships_the_files_and_runs_from_anywhere(tmp_path):
    src = _copy_source(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), "."], cwd=src, check=True, capture_output=True, text=True)
    wheel, = (tmp_path / "dist").glob("neuroplastic-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for kind in SHIPPED:
        shipped = sorted(Path(n).stem for n in names if n.startswith(f"neuroplastic/shipped/{kind}/"))
        assert shipped == sorted(p.stem for p in (ROOT / kind).glob("*.toml")), kind
    assert "neuroplastic/resources.py" in names and not [n for n in names if n.endswith(".png")]

    # Install it (no dependencies: this environment has them) into a directory of its own, and run its
    # console script from an empty directory with that directory first on the path: the checkout (and the
    # editable install of this environment) stay out of sight.
    target, empty = tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(target)}

    def neuroplastic(*args):
        return subprocess.run([str(target / "bin" / "neuroplastic"), *args], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=120)

    where = subprocess.run([sys.executable, "-c", "import neuroplastic.resources as r; "
                            "print(r.protocols_dir(), r.checkout_root())"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(target / "neuroplastic" / "shipped" / "protocols"), "None"]
    listed = neuroplastic("list")
    assert listed.returncode == 0, listed.stderr
    for name in resources.protocols() | resources.models():
        assert f"  {name} " in listed.stdout, name
    valid = neuroplastic("validate", "clapp_digits", "clapp_digits_brian")
    assert valid.returncode == 0 and valid.stdout.startswith("ok      clapp_digits  "), valid.stderr
    missing = neuroplastic("bench", "sweep")
    assert missing.returncode == 2 and "ship only with the source checkout" in missing.stderr
