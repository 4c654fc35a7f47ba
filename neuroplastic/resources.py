"""Where the shipped protocols, models and figure recipes are, in a checkout and in an installed wheel.

The files live at the top of the repository (``protocols/``, ``models/``, ``figures/``), where a
reader looks for them. ``neuroplastic/shipped/`` holds three relative symlinks to those directories,
so that setuptools copies their ``*.toml`` files into the wheel as package data (``setup.cfg``,
``[options.package_data]``). The package reads them only through this module, with
:mod:`importlib.resources`: one lookup serves an installed wheel (the copies in site-packages), an
editable install and a plain checkout (the symlinks), whatever the working directory.

``benchmarks/`` is not shipped: its scripts exist only in a checkout (:func:`benchmarks_dir`).

Examples
--------
>>> from neuroplastic import resources
>>> "clapp_digits" in resources.protocols() and "two_compartment" in resources.models()
True
>>> resources.find_protocol("clapp_digits").name
'clapp_digits.toml'
"""
from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from .errors import ProtocolError

__all__ = ["benchmarks_dir", "checkout_root", "figure_recipes", "figures_dir", "find_protocol", "models",
           "models_dir", "protocols", "protocols_dir"]


def _shipped(name: str) -> Path:
    """``neuroplastic/shipped/<name>`` as a file-system path (the callers glob it and hand paths on)."""
    where = resources.files("neuroplastic") / "shipped" / name
    if not isinstance(where, Path):      # a zipped package (zipimport): pip always installs plain files
        raise RuntimeError(f"neuroplastic's shipped files are not on the file system ({where}): "
                           "install the package with pip, not as a zip archive")
    return where


def protocols_dir() -> Path:
    """Directory of the shipped protocols (``protocols/*.toml``)."""
    return _shipped("protocols")


def models_dir() -> Path:
    """Directory of the shipped neuron and synapse models (``models/*.toml``)."""
    return _shipped("models")


def figures_dir() -> Path:
    """Directory of the shipped figure recipes (``figures/*.toml``)."""
    return _shipped("figures")


def _by_name(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.toml"))}


def protocols() -> dict[str, Path]:
    """Every shipped protocol by name (the names ``neuroplastic list`` shows)."""
    return _by_name(protocols_dir())


def models() -> dict[str, Path]:
    """Every shipped model by name (what ``[model] file`` and ``synapses`` accept)."""
    return _by_name(models_dir())


def figure_recipes() -> dict[str, Path]:
    """Every shipped figure recipe by name (what ``neuroplastic figures NAME`` accepts)."""
    return _by_name(figures_dir())


def find_protocol(name_or_path: str | Path) -> Path:
    """A protocol file given as a path, else as the name of a shipped protocol (``clapp_digits``).

    An existing file wins over a shipped name. A missing path is returned as given, for
    :func:`neuroplastic.protocol.load` to report (unless it ends in a shipped name: then the error says
    to use the name); a bare word that names no shipped protocol raises
    :class:`~neuroplastic.errors.ProtocolError` listing the known names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = protocols()
    stem = path.name.removesuffix(".toml")
    if path.parent == Path(".") and stem in known:
        return known[stem]
    if path.parent != Path(".") or path.suffix == ".toml":
        if stem in known:
            raise ProtocolError(str(name_or_path), "", f"no such protocol file; the shipped protocol {stem!r} is "
                                f"run by its name: neuroplastic run {stem}")
        return path
    close = difflib.get_close_matches(stem, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ProtocolError(str(name_or_path), "", f"no such protocol file, nor a shipped protocol of that name{hint} "
                        f"(shipped protocols, as `neuroplastic list` shows them: {', '.join(known)})")


def checkout_root() -> Path | None:
    """The repository checkout the package runs from (an editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "setup.cfg").is_file() and (root / "benchmarks").is_dir() else None


def benchmarks_dir() -> Path | None:
    """The checkout's ``benchmarks/`` scripts, or None for an installed wheel (they are not shipped)."""
    root = checkout_root()
    return root / "benchmarks" if root is not None else None
