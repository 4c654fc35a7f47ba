"""The ``neuroplastic`` command: run, validate and list protocols.

Exit codes: 0 success; 1 the run (or a sweep point) failed (e.g. diverged; its
checkpoints are kept) or the machine refused a file (a full disk, a read-only file system);
2 bad input (protocol, model file, data, run directory), with one message that names the file,
the key and what is allowed; 130 interrupted (Ctrl-C), with the command that continues.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tomllib
from pathlib import Path

from . import __version__
from .errors import FigureError, NeuroplasticError, RunError, storage_error

# The rest of the package (numpy, scikit-learn, Brian2) is imported by the commands that need it,
# inside main(): Ctrl-C while it loads is then an interrupt like any other, not a traceback.

__all__ = ["main"]

log = logging.getLogger("neuroplastic")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuroplastic", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"neuroplastic {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log each phase (loading, building, training, probing) and its duration; -vv: debug too")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="train and evaluate a protocol; results go to a run directory")
    r.add_argument("protocol", type=Path, help="protocol file (TOML), or the name of a shipped protocol "
                   "(see neuroplastic list), e.g. clapp_digits")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a protocol value, e.g. --set rule.lr=3e-4 (repeatable)")
    r.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    r.add_argument("--device", choices=("runtime", "cpp", "cuda"),
                   help="Brian2 device; shortcut for --set engine.device=...")
    r.add_argument("--cuda-arch", type=float, metavar="CC",
                   help="CUDA compute capability to compile for (default 9.0); shortcut for --set engine.cuda_arch=CC")
    r.add_argument("--build-only", action="store_true",
                   help="generate and compile the network (cpp or cuda device) and stop: no run, no run directory")
    r.add_argument("--out", type=Path, default=Path("runs"), help="root of the run directories (default: runs)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    g.add_argument("--force", action="store_true", help="start over, overwriting an existing run")
    r.add_argument("--quiet", action="store_true", help="no progress bar, only the result table")

    v = sub.add_parser("validate", help="check protocol files without running them")
    v.add_argument("protocols", type=Path, nargs="+", metavar="PROTOCOL",
                   help="protocol files, or names of shipped protocols (see neuroplastic list)")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE")
    v.add_argument("--skip-data", action="store_true",
                   help="check everything but the data set (e.g. before the data are on this machine)")

    sub.add_parser("list", help="list the shipped protocols (run or validate them by name), models and data sources")

    from .sweep import add_arguments as sweep_arguments

    sweep_arguments(sub.add_parser("sweep", help="run a protocol over a grid of values in parallel (local "
                                   "processes or dask); one run directory per point, a summary for all"))

    f = sub.add_parser("figures", help="build the papers' figures from figures/*.toml, running only missing runs")
    f.add_argument("names", nargs="*", metavar="NAME", help="figures to build (default: all; see figures/)")
    f.add_argument("--scale", choices=("tiny", "quick", "paper"), default="quick",
                   help="size of the runs behind the figures (default: quick; tiny is for tests)")
    f.add_argument("--runs", type=Path, default=Path("runs"), help="results store to reuse and fill (default: runs)")
    f.add_argument("--out", type=Path, help="where the figures go (default: figures/<scale>)")
    f.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="draw each figure only from its runs with this setting, e.g. seed=1..2, rule.name=clapp "
                   "(repeatable; all must hold; runs filtered out are not run)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")

    b = sub.add_parser("bench", help="run benchmarks/ and write a report (markdown + figure) of every ratio")
    b.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all; see neuroplastic.bench)")
    b.add_argument("--quick", action="store_true", help="smaller sizes (minutes instead of the full benchmarks)")
    b.add_argument("--out", type=Path, default=Path("bench"), help="report directory (default: bench/)")

    c = sub.add_parser("compare", help="compare finished runs (or sweeps): probe accuracy, loss, weights, CKA")
    c.add_argument("runs", nargs="*", metavar="RUN", help="run directories, sweep directories, or names of runs "
                   "in --store (a run directory's name, or a protocol name for all its runs, sorted by seed then "
                   "date); the first run is the reference for weight similarity and CKA")
    c.add_argument("--out", type=Path, default=Path("comparison"),
                   help="where comparison.csv and comparison.png/.pdf go (default: comparison/)")
    c.add_argument("--force", action="store_true", help="compare even runs of different architecture or data")
    c.add_argument("--store", type=Path, default=Path("runs"), help="results store that names are looked up in "
                   "(default: runs)")
    c.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only runs with this setting, e.g. seed=2, seed=1..3, rule.name=clapp, rule.lr=3e-4, "
                   "status=finished (repeatable; all must hold)")

    ls = sub.add_parser("runs", help="list the runs of a results store: settings that differ, seed, status, probe")
    ls.add_argument("store", type=Path, nargs="?", default=Path("runs"), metavar="DIR",
                    help="results store (default: runs)")
    ls.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                    help="keep only runs with this setting, e.g. seed=2, rule.name=clapp, status=finished, "
                    "model.layers=[64,64] (repeatable; all must hold)")

    e = sub.add_parser("export", help="write a spiking run's spikes and traces as NWB (pip install neuroplastic[nwb])")
    e.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory of a spiking run")
    e.add_argument("--nwb", type=Path, metavar="PATH", help="the NWB file to write (default: RUN_DIR/spikes.nwb)")
    for command in sub.choices.values():        # -v after the command too: neuroplastic run P -v
        command.add_argument("-v", "--verbose", dest="verbose_command", action="count", default=0,
                             help="log each phase and its duration; -vv: debug too")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parser().parse_args(argv)
        args.argv = argv
        from .progress import ConsoleHandler, show

        show(not getattr(args, "quiet", False))  # status lines on stderr, unless --quiet
        verbosity = args.verbose + getattr(args, "verbose_command", 0)
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
        console = ConsoleHandler(level)        # stderr; a run lowers the package's logger for its run.log, not this
        console.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[console])
        log.setLevel(level if verbosity else logging.NOTSET)
        return {"run": _run, "validate": _validate, "list": _list, "compare": _compare, "figures": _figures, "bench": _bench,
                "sweep": _sweep, "runs": _runs, "export": _export}[args.command](args)
    except NeuroplasticError as err:       # bad input: one line; anything else is a bug and shows its traceback
        print(f"neuroplastic: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:              # before or after a run (a run itself records it and says how to resume)
        print("\nneuroplastic: interrupted", file=sys.stderr)
        return 130
    except OSError as err:                 # the machine refused a file: a full disk, a read-only --out, a dead mount
        error = storage_error(err, "read or write")
        print(f"neuroplastic: error: {error}", file=sys.stderr)
        return error.exit_code


def _run(args) -> int:
    from .engines import get_engine
    from .protocol import load
    from .resources import find_protocol
    from .runner import run_protocol

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else []) \
        + ([f'engine.device="{args.device}"'] if args.device else []) \
        + ([f"engine.cuda_arch={args.cuda_arch}"] if args.cuda_arch is not None else [])
    protocol = load(find_protocol(args.protocol), overrides)
    engine = get_engine(protocol.engine.name)
    if args.build_only:
        return _build_only(protocol, engine)
    # Checks that need the data (e.g. a patch larger than the images) raise ProtocolError before the
    # run directory exists: bad input never leaves a run behind, nor replaces one under --force.
    outcome = run_protocol(protocol, args.out, resume=args.resume, force=args.force, progress=not args.quiet,
                           command=["neuroplastic", *args.argv],
                           on_open=None if args.quiet else lambda run: print(f"run directory: {run.directory}"))
    if outcome.code == 130:
        again = ["neuroplastic", *(a for a in args.argv if a not in ("--resume", "--force")), "--resume"]
        print(f"\ninterrupted; continue with: {shlex.join(again)}", file=sys.stderr)
        return 130
    if outcome.error is not None:
        print(f"neuroplastic: error: {outcome.error}", file=sys.stderr)
        return outcome.code
    if outcome.reused:                         # its saved result; --force runs it again
        print(f"already finished: {outcome.directory}")
        print(_probe_table(outcome.summary))
        return 0
    print(_probe_table(outcome.summary))
    print(f"results: {outcome.directory}")
    return 0


def _build_only(protocol, engine) -> int:
    """Compile the protocol's Brian2 network and say where the binary is."""
    from .engines.prepare import prepare

    directory = engine.build(protocol, prepare(protocol, running=False))
    print(f"built: {directory / 'main'} ({protocol.engine.device} device)")
    if protocol.engine.device == "cuda":
        from .engines.brian.device import gpu_available

        if not gpu_available():
            print("no GPU found on this machine: the binary was compiled, not run")
    return 0


def _probe_table(summary: dict) -> str:
    """Per-layer probe accuracy, trained next to random weights."""
    probe, rand = summary.get("probe", {}), summary.get("probe_random", {})
    lines = [f"{'layer':>5}  {'trained':>8}  {'random':>8}"]
    for layer, acc in probe.items():
        r = f"{rand[layer]:8.3f}" if layer in rand else f"{'-':>8}"
        lines.append(f"{layer:>5}  {acc:8.3f}  {r}")
    return "\n".join(lines)


def _validate(args) -> int:
    """Every check ``run`` makes before it creates a run directory: the protocol, the engine, the model
    files, the data and the size of the network (the data are loaded, nothing is trained or written).
    ``--skip-data`` leaves out the data and what depends on them."""
    from .engines.prepare import check, prepare
    from .protocol import load
    from .resources import find_protocol

    failed = 0
    for path in args.protocols:
        try:
            p = load(find_protocol(path), args.overrides)
            check(p, running=False) if args.skip_data else prepare(p, running=False)
            print(f"ok      {path}  ({p.name}, hash {p.digest()[:10]})")
        except NeuroplasticError as err:
            print(f"invalid {err}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _sweep(args) -> int:
    from .sweep import command

    return command(args)


def _figures(args) -> int:
    from .figures import build_figure, filter_recipes, load_recipe, recipes

    known = recipes()
    if unknown := [n for n in args.names if n not in known]:
        raise FigureError(f"no figure recipe {unknown[0]!r}; known: {', '.join(known)}")
    out = args.out or Path("figures") / args.scale
    chosen = [load_recipe(known[n], args.scale) for n in (args.names or known)]
    chosen = filter_recipes(chosen, args.where, args.runs)     # every filter checked before any run starts
    for recipe in chosen:
        paths = build_figure(recipe, args.runs, out, progress=not args.quiet, where=args.where)
        print(f"{recipe.name:<20} {', '.join(map(str, paths))}")
    return 0


def _bench(args) -> int:
    from .bench import BENCHMARKS, run_benchmarks, write_report

    if unknown := [n for n in args.names if n not in BENCHMARKS]:
        raise FigureError(f"no benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    results = run_benchmarks(args.names or list(BENCHMARKS), args.out, quick=args.quick)
    for path in write_report(results, args.out):
        print(f"written: {path}")
    return 1 if any("failed" in r for r in results.values()) else 0


def _export(args) -> int:
    from .nwb import export_nwb

    print(f"written: {export_nwb(args.run_dir, args.nwb)}")
    return 0


def _compare(args) -> int:
    from .compare import check_comparable, compare_runs, comparison_figure, expand_runs, format_table, write_csv
    from .results import save_figure

    runs = expand_runs(args.runs, store=args.store, where=args.where)
    problems = check_comparable(runs)
    if problems and not args.force:
        raise RunError("these runs are not comparable (use --force to compare anyway):\n  " + "\n  ".join(problems))
    rows = compare_runs(runs)
    print(format_table(rows))
    write_csv(rows, args.out / "comparison.csv")
    save_figure(comparison_figure(rows), args.out / "comparison")
    print(f"written: {args.out / 'comparison.csv'}, {args.out / 'comparison.png'}")
    return 0


def _runs(args) -> int:
    """List the results store: one line per run, then the directories that are not readable runs."""
    from .catalog import format_listing, parse_where, scan, select

    filters = parse_where(args.where)
    entries = scan(args.store)
    chosen = select(entries, filters)
    others = [e for e in entries if e.manifest is None]
    if chosen or (others and not filters):
        print(format_listing(chosen, [] if filters else others))
    else:
        print(f"no runs in {args.store}" + (" with " + " ".join(args.where) if filters else ""))
    if filters and others:
        print(f"({len(others)} other directories of {args.store} are not readable runs; list without --where to see them)")
    return 0


def _list(args) -> int:
    from .resources import models, protocols

    print("protocols:")
    for name, path in protocols().items():
        print(f"  {name:<28} {_describe(path, 'description')}")
    print("models:")
    for name, path in models().items():
        print(f"  {name:<28} {_describe(path, 'description')}")
    from .data import DATASETS

    print("data sources ([data] source; split and label: the first is the default):")
    for name, src in sorted(DATASETS.items()):
        print(f"  {name:<28} {src.domain}: {src.doc}")
        print(f"  {'':<28} split: {', '.join(src.splits)}; label: {', '.join(src.labels)}"
              + ("; needs [data] path" if src.needs_path else ""))
    return 0


def _describe(path: Path, key: str) -> str:
    try:
        return str(tomllib.loads(path.read_text()).get(key, ""))
    except (OSError, tomllib.TOMLDecodeError) as err:
        return f"(unreadable: {err})"


if __name__ == "__main__":
    sys.exit(main())
