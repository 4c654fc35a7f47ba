"""Probe accuracy of a protocol's trained network vs its random-weight encoder, over seeds.

    python benchmarks/probe_seeds.py protocols/clapp_digits.toml --seeds 1 2 3

Each seed is an ordinary run in the results store (``--out``, default
``runs/``), so finished seeds are reused (pass ``--force`` to recompute). Prints
mean ± std per layer, the gain over random paired by seed, on how many seeds the trained
network wins, and whether it beats random on average. A spiking run's probe reads its spikes;
``--baseline probe_random_rates`` compares it with the random encoder read out as rates
(``probe_rates`` and ``probe_random_rates`` of its summary).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from neuroplastic.cli import main as cli
from neuroplastic.protocol import load
from neuroplastic.results import Run


def probe_over_seeds(protocol_file: Path, seeds: list[int], out: Path, extra: list[str], force: bool,
                     trained: str = "probe", baseline: str = "probe_random"):
    """Run (or reuse) one run per seed; return {layer: (trained accuracies, random accuracies)}.

    ``trained`` and ``baseline`` name the summary's probe tables that are compared.
    """
    table: dict[str, tuple[list[float], list[float]]] = {}
    for seed in seeds:
        overrides = [*extra, f"seed={seed}"]
        directory = Run.path_for(out, load(protocol_file, overrides))
        done = (directory / "summary.json").is_file() and not force
        if not done:
            args = ["run", str(protocol_file), "--quiet", "--out", str(out), "--force"]
            rc = cli([*args, *(a for o in overrides for a in ("--set", o))])
            if rc != 0:
                sys.exit(f"seed {seed} failed (exit {rc})")
        summary = json.loads((directory / "summary.json").read_text())
        for layer, acc in summary[trained].items():
            mine, rand = table.setdefault(layer, ([], []))
            mine.append(acc)
            rand.append(summary[baseline][layer])
    return table


def seeds_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a script over a protocol's seeds: the protocol, ``--seeds``, ``--out`` and ``--set``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("protocol", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE")
    return p


def main(argv=None) -> int:
    p = seeds_parser(__doc__.split("\n")[0])
    p.add_argument("--force", action="store_true", help="recompute seeds that already finished")
    tables = ("probe", "probe_random", "probe_rates", "probe_random_rates")
    p.add_argument("--trained", default="probe", choices=tables, help="the trained network's probe table")
    p.add_argument("--baseline", default="probe_random", choices=tables,
                   help="the random encoder's probe table (spiking runs: probe_random_rates reads it as rates)")
    args = p.parse_args(argv)
    table = probe_over_seeds(args.protocol, args.seeds, args.out, args.overrides, args.force, args.trained,
                             args.baseline)
    print(f"{args.protocol} — linear probe, {len(args.seeds)} seeds {args.seeds} (mean ± std; "
          f"{args.trained} against {args.baseline})")
    print(f"{'layer':>5}  {'trained':>15}  {'random':>15}  {'gain, points':>14}  seeds won  beats random")
    for layer, (trained, rand) in table.items():
        t, r = np.array(trained), np.array(rand)
        gain = 100 * (t - r)                                # paired by seed: same data split and initial weights
        print(f"{layer:>5}  {t.mean():.3f} ± {t.std():.3f}  {r.mean():8.3f} ± {r.std():.3f}  "
              f"{gain.mean():+6.1f} ± {gain.std():.1f}  {int(np.sum(gain > 0)):>4} / {len(gain):<3}  "
              f"{'yes' if t.mean() > r.mean() else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
