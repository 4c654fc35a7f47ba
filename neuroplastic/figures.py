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

``--where KEY=VALUE`` filters (:func:`filter_recipes`) keep the runs of a recipe whose resolved
protocol, seed and status pass them all, with the matching of :mod:`neuroplastic.catalog` (the same as
``neuroplastic runs`` and ``compare``): ``--where seed=1..2`` draws every figure from seeds 1 and 2.
They are applied before anything is run, so a run filtered out is never trained.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .protocol import load
from .resources import figure_recipes, figures_dir, protocols_dir
from .errors import FigureError
from .results import Run, RunError, atomic_write

__all__ = ["FIGURES_DIR", "SCALES", "FigureError", "Recipe", "build_figure", "filter_recipes", "load_recipe",
           "recipes"]

#: The shipped recipes: the checkout's ``figures/``, or their copies in an installed wheel.
FIGURES_DIR = figures_dir()
SCALES = ("tiny", "quick", "paper")
_TOP = {"title", "plot", "runs", "scale", "description", "bench"}
_RUN = {"label", "protocol", "set", "seeds"}
#: Plots that pair their groups of runs seed by seed (rate with spiking): a filter may leave them fewer
#: seeds, never fewer groups, and that is refused before anything is run.
PAIRED_PLOTS = ("rate_vs_spiking",)




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


def _candidate(spec: RunSpec, seed: int, runs_dir: Path):
    """The :class:`~neuroplastic.catalog.Entry` a filter tests for ``spec`` at ``seed``: its resolved protocol,
    seed and the status of its run directory in the store (``None`` when it has not been run)."""
    from .catalog import Entry

    protocol = load(spec.protocol, [*spec.overrides, f"seed={seed}"])
    directory = Run.path_for(runs_dir, protocol)
    try:
        status = Run.load(directory).manifest.get("status") if (directory / "manifest.json").is_file() else None
    except RunError:
        status = "unknown"
    return Entry(directory, {"name": protocol.name, "seed": seed, "status": status, "protocol": protocol.as_dict()})


def filter_recipes(chosen: list[Recipe], where, runs_dir: str | Path) -> list[Recipe]:
    """``chosen`` with only the runs that pass every ``--where`` filter (``["seed=1..2", 'rule.name="clapp"']``).

    A run spec keeps the seeds whose resolved protocol passes (:meth:`neuroplastic.catalog.Filter.matches`
    on :func:`neuroplastic.catalog.settings`); a spec with none left is dropped, so a figure's legend
    shows only the methods that remain. A key no protocol and no candidate run knows is refused (a
    :class:`RunError` naming the allowed keys), and so is a figure left with no run (a :class:`FigureError`
    naming it); a recipe that draws no runs (benchmarks only) is kept as it is.
    """
    from .catalog import check_filters, parse_where, settings

    filters = parse_where(where)
    if not filters:
        return list(chosen)
    candidates = {(k, j, seed): _candidate(spec, seed, Path(runs_dir))
                  for k, recipe in enumerate(chosen) for j, spec in enumerate(recipe.runs) for seed in spec.seeds}
    check_filters(filters, list(candidates.values()))
    out = []
    for k, recipe in enumerate(chosen):
        specs = [replace(spec, seeds=kept) for j, spec in enumerate(recipe.runs)
                 if (kept := tuple(seed for seed in spec.seeds
                                   if all(f.matches(settings(candidates[k, j, seed].manifest)) for f in filters)))]
        given = " ".join(f"--where {f.key}={f.text}" for f in filters)
        if recipe.runs and not specs:
            n = sum(len(spec.seeds) for spec in recipe.runs)
            raise FigureError(f"figure {recipe.name}: none of its {n} runs passes {given} "
                              f"(its runs: {', '.join(_describe(spec) for spec in recipe.runs)})")
        if recipe.plot in PAIRED_PLOTS and len(specs) < len(recipe.runs):
            raise FigureError(f"figure {recipe.name} pairs its runs {', '.join(repr(s.label) for s in recipe.runs)} "
                              f"seed by seed, and {given} leaves only {', '.join(repr(s.label) for s in specs)}: "
                              "filter on what they share (seed, status, a key both set)")
        out.append(replace(recipe, runs=tuple(specs)))
    return out


def _describe(spec: RunSpec) -> str:
    """``label (protocol, its overrides; seeds 1, 2)``: a recipe's run spec in an error message."""
    seeds = ", ".join(map(str, spec.seeds))
    return f"{spec.label} ({spec.protocol.stem}{', ' + ', '.join(spec.overrides) if spec.overrides else ''}; " \
           f"seed{'s' * (len(spec.seeds) != 1)} {seeds})"


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
                 bench_dir: str | Path | None = None, where=()) -> list[Path]:
    """Make sure every run of ``recipe`` is finished, draw the figure and save ``out/<name>.png|.pdf``.

    The numbers the figure shows, the runs they come from and the ``--where`` filters that chose them
    (``where``, as given; :func:`filter_recipes` applies them) are saved next to it in ``<name>.json``.
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
    try:
        fig, numbers = FIGURES[recipe.plot](runs, title=recipe.title, **extra)
    except ValueError as err:
        if not where:                      # a recipe's own runs that do not fit its plot: a bug, with its traceback
            raise
        raise FigureError(f"figure {recipe.name}: the runs left by {' '.join(f'--where {w}' for w in where)} "
                          f"({', '.join(_describe(spec) for spec in recipe.runs)}) cannot be drawn: {err}") from None
    paths = save_figure(fig, Path(out) / recipe.name)
    plt.close(fig)
    # Run directory names, not paths: the results store lies wherever the user put it.
    sources = {label: [r.directory.name for r in group] for label, group in runs.items()}
    atomic_write(Path(out) / f"{recipe.name}.json",
                 json.dumps({"figure": recipe.name, "numbers": numbers, "runs": sources, "where": list(where)},
                            indent=2) + "\n")
    return paths
