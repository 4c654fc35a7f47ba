"""A spiking run's probe from its spike counts, with more presentations, against its probe read out as rates.

    python benchmarks/probe_presentations.py protocols/clapp_natural_images_spiking.toml --seeds 21 22 23 \\
        --set data.max_samples=900 --presentations 1 2 4

One presentation of every image gives each neuron a spike count, a noisy estimate of its rate: how much of
the gap between the probe read from spikes and the probe read out as rates is that noise? For each seed's
finished run (found as ``probe_seeds.py`` finds it, with the same ``--set``), the trained weights of its
last checkpoint are presented again, ``max(--presentations)`` times with fresh spike noise, and the
spike-count rates averaged over the first P presentations are linear-probed with the run's own split and
settings, as ``[evaluate] presentations = P`` would. The k-th presentation's noise is the run's own, so at
the run's own P its ``probe`` comes out again (printed as a check). Printed per layer: the probe at each P,
the run's ``probe_rates`` (the same weights read out as rates) and ``probe_random_rates`` (the random
encoder's).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from neuroplastic.protocol import load
from neuroplastic.results import Run, atomic_write
from probe_seeds import seeds_parser      # its neighbour in benchmarks/


def reprobe(protocol, directory: Path, presentations: list[int]) -> dict[int, dict[str, float]]:
    """``{P: {layer: accuracy}}`` of the run's trained weights, read from the spikes of P presentations.

    Each count is kept in the run's ``probe_presentations.json`` (written atomically) as soon as it is
    measured, so a later call, e.g. for several seeds at once after one process per seed, or after an
    interruption, simulates only what is missing.
    """
    from neuroplastic.engines.base import probe_encoder
    from neuroplastic.engines.brian.engine import ENGINE, presented_rates
    from neuroplastic.engines.prepare import prepare

    saved = directory / "probe_presentations.json"
    table = {int(k): v for k, v in json.loads(saved.read_text()).items()} if saved.is_file() else {}
    if all(k in table for k in presentations):
        return {k: table[k] for k in presentations}
    checkpoint = Run.load(directory).latest_checkpoint()
    if checkpoint is None:
        sys.exit(f"{directory}: no checkpoint")
    params = {k[len("param/"):]: v for k, v in checkpoint[1].items() if k.startswith("param/")}
    prepared = prepare(protocol)
    model = ENGINE.init(protocol, prepared, np.random.default_rng(0))     # the weights are replaced below
    probe = prepared.probe_set()
    try:
        for k, mean in enumerate(presented_rates(model.net, params, max(presentations)), start=1):
            if k in presentations and k not in table:
                _, summary = probe_encoder(protocol, mean, None, probe.dataset.labels,
                                           probe.train_idx, probe.test_idx)
                table[k] = summary["probe"]
                atomic_write(saved, json.dumps({str(c): v for c, v in sorted(table.items())}, indent=1))
                print(f"  {directory.name}: {k} presentation(s): "
                      + " / ".join(f"{a:.3f}" for a in summary["probe"].values()), flush=True)
    finally:
        ENGINE.release(model)
    return {k: table[k] for k in presentations}


def main(argv=None) -> int:
    p = seeds_parser(__doc__.split("\n")[0])
    p.add_argument("--presentations", type=int, nargs="+", default=[1, 2, 4])
    args = p.parse_args(argv)
    if min(args.presentations) < 1:
        p.error("--presentations: counts of 1 or more")
    rows, counts = {}, sorted(set(args.presentations))
    for seed in args.seeds:
        protocol = load(args.protocol, [*args.overrides, f"seed={seed}"])
        if protocol.engine.variant != "spiking":
            p.error(f"{args.protocol}: [engine] variant = {protocol.engine.variant!r}: only a spiking run has spikes")
        directory = Run.path_for(args.out, protocol)
        if not (directory / "summary.json").is_file():
            sys.exit(f"seed {seed}: no finished run at {directory} (run probe_seeds.py with the same --set first)")
        summary = json.loads((directory / "summary.json").read_text())
        rows[seed] = (reprobe(protocol, directory, counts), summary)
    own = protocol.evaluate.presentations                 # the same in every seed's run
    print(f"{args.protocol} — linear probe of the trained weights read from spikes, mean over seeds {args.seeds}")
    print(f"{'layer':>5}  " + "  ".join(f"{'P = ' + str(k):>8}" for k in counts)
          + f"  {'as rates':>8}  {'random as rates':>15}  {f'P = {own} is the run':>17}")
    for layer in next(iter(rows.values()))[1]["probe"]:
        cells = [np.mean([table[k][layer] for table, _ in rows.values()]) for k in counts]
        rates = np.mean([s["probe_rates"][layer] for _, s in rows.values()])
        random = np.mean([s["probe_random_rates"][layer] for _, s in rows.values()])
        same = ("-" if own not in counts else
                "yes" if all(np.isclose(t[own][layer], s["probe"][layer]) for t, s in rows.values()) else "NO")
        print(f"{layer:>5}  " + "  ".join(f"{c:8.3f}" for c in cells) + f"  {rates:8.3f}  {random:15.3f}  {same:>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
