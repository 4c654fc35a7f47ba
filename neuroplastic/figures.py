"""Figure recipes: which runs a figure needs and how it is drawn, rebuilt by ``neuroplastic figures``.

A recipe is a TOML file in ``figures/`` (the repository's), named like the figure::

    title = "Learning curves"
    plot = "learning_curves"            # a function in neuroplastic.plots.FIGURES

    [[runs]]                            # one entry per curve / bar group
    label = "CLAPP-s"
    protocol = "clapp_digits"           # a file in protocols/ (or a path)
    set = ['rule.name = "clapp_s"']     # overrides, as `neuroplastic run --set`
    seeds = [1, 2, 3]

    [scale.tiny]                        # overrides for every run at this scale (tests use `tiny`)
    set = ["train.epochs = 1"]
    seeds = [1]

A recipe may instead (or also) name benchmarks, ``bench = ["brian_rate", ...]`` (see
:data:`neuroplastic.bench.BENCHMARKS`), whose results it reads from ``<out>/bench/results.json``;
missing ones are run at their quick size.

Every run is an ordinary run in the results store: a finished one is reused, a missing or unfinished
one is run (or resumed). The plot functions read only what the runs saved; nothing is recomputed.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import load
from .resources import figure_recipes, figures_dir, protocols_dir
from .errors import FigureError
from .results import Run, RunError, atomic_write

__all__ = ["FIGURES_DIR", "SCALES", "FigureError", "Recipe", "build_figure", "load_recipe", "recipes"]

#: The shipped recipes: the checkout's ``figures/``, or their copies in an installed wheel.
FIGURES_DIR = figures_dir()
SCALES = ("tiny", "quick", "paper")
_TOP = {"title", "plot", "runs", "scale", "description", "bench"}
_RUN = {"label", "protocol", "set", "seeds"}




@dataclass(frozen=True)
class RunSpec:
    label: str
    protocol: Path
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    title: str
    plot: str
    runs: tuple[RunSpec, ...]
    bench: tuple[str, ...] = ()


def recipes() -> dict[str, Path]:
    """Every shipped recipe (``figures/*.toml``) by name."""
    return figure_recipes()


def _fail(path, key, msg):
    raise FigureError(f"{path}: [{key}] {msg}" if key else f"{path}: {msg}")


def load_recipe(path: str | Path, scale: str = "quick") -> Recipe:
    """Read and check a recipe, with the overrides of ``scale`` applied to every run."""
    from .plots import FIGURES

    path = Path(path)
    if scale not in SCALES:
        _fail(path, "scale", f"{scale!r} is not a scale; allowed: {', '.join(SCALES)}")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        _fail(path, "", f"cannot read the recipe: {err}")
    if unknown := set(raw) - _TOP:
        _fail(path, sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(_TOP))}")
    if raw.get("plot") not in FIGURES:
        _fail(path, "plot", f"= {raw.get('plot')!r}; allowed: {', '.join(sorted(FIGURES))}")
    scales = raw.get("scale", {})
    if unknown := set(scales) - set(SCALES):
        _fail(path, f"scale.{sorted(unknown)[0]}", f"unknown scale; allowed: {', '.join(SCALES)}")
    at_scale = scales.get(scale, {})
    if unknown := set(at_scale) - {"set", "seeds", "bench"}:
        _fail(path, f"scale.{scale}", f"unknown key {sorted(unknown)[0]!r}; allowed: bench, set, seeds")
    from .bench import BENCHMARKS

    bench = at_scale.get("bench", raw.get("bench", []))
    if unknown := [b for b in bench if b not in BENCHMARKS]:
        _fail(path, "bench", f"{unknown[0]!r} is not a benchmark; allowed: {', '.join(BENCHMARKS)}")
    runs = []
    for k, entry in enumerate(raw.get("runs", [])):
        if unknown := set(entry) - _RUN:
            _fail(path, f"runs.{k}", f"unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_RUN))}")
        if "protocol" not in entry:
            _fail(path, f"runs.{k}", "missing key 'protocol'")
        proto = Path(entry["protocol"])
        shipped = protocols_dir()
        candidates = [path.parent / proto, shipped / proto, shipped / f"{proto}.toml"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            _fail(path, f"runs.{k}", f"protocol = {str(proto)!r}: no such protocol (looked in {path.parent} "
                  f"and {shipped})")
        seeds = at_scale.get("seeds", entry.get("seeds", [1]))
        if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            _fail(path, f"runs.{k}", f"seeds = {seeds!r}: must be a non-empty list of integers >= 0")
        runs.append(RunSpec(entry.get("label", proto.stem), found.resolve(),
                            (*entry.get("set", []), *at_scale.get("set", [])), tuple(seeds)))
    return Recipe(path.stem, path, raw.get("title", path.stem), raw["plot"], tuple(runs), tuple(bench))


def _ensure_run(spec: RunSpec, seed: int, runs_dir: Path, progress: bool) -> Run:
    """The finished run of ``spec`` at ``seed``: reused from the results store, else run (or resumed) now."""
    from .runner import run_protocol

    protocol = load(spec.protocol, [*spec.overrides, f"seed={seed}"])
    directory = Run.path_for(runs_dir, protocol)
    manifest = directory / "manifest.json"
    if manifest.is_file() and Run.load(directory).manifest.get("status") == "finished":
        return Run.load(directory)
    outcome = run_protocol(protocol, runs_dir, resume=manifest.is_file(), progress=progress,
                           command=["neuroplastic", "figures"])
    if outcome.code != 0:
        raise RunError(f"{spec.label} (seed {seed}) failed: {outcome.error}; see {outcome.directory}")
    return Run.load(outcome.directory)


def build_figure(recipe: Recipe, runs_dir: str | Path, out: str | Path, progress: bool = True,
                 bench_dir: str | Path | None = None) -> list[Path]:
    """Make sure every run of ``recipe`` is finished, draw the figure and save ``out/<name>.png|.pdf``.

    The numbers the figure shows, and the runs they come from, are saved next to it in ``<name>.json``.
    """
    import matplotlib.pyplot as plt

    from .plots import FIGURES
    from .results import save_figure

    runs: dict[str, list[Run]] = {}
    for spec in recipe.runs:
        runs[spec.label] = [_ensure_run(spec, seed, Path(runs_dir), progress) for seed in spec.seeds]
    extra: dict[str, Any] = {}
    if recipe.bench:
        from .bench import ensure_results

        extra["bench"] = ensure_results(recipe.bench, Path(bench_dir or Path(out) / "bench"))
    fig, numbers = FIGURES[recipe.plot](runs, title=recipe.title, **extra)
    paths = save_figure(fig, Path(out) / recipe.name)
    plt.close(fig)
    # Run directory names, not paths: the results store lies wherever the user put it.
    sources = {label: [r.directory.name for r in group] for label, group in runs.items()}
    atomic_write(Path(out) / f"{recipe.name}.json",
                 json.dumps({"figure": recipe.name, "numbers": numbers, "runs": sources}, indent=2) + "\n")
    return paths
