"""The ceiling of figure (d)'s training ΔW correlation: the rate rule against itself, its input jittered by 1 %.

Figure (d) correlates the weight change of a whole training run of the spiking network with the rate
network's on the same stream. Any difference between two runs, however small, changes some hinge gates, and
each changed gate changes the weights that every later glimpse sees, so two runs drift apart over the
epochs. This measures how far for the smallest difference the fidelity measures use: two runs of the rate
rule (the numpy online reference, equal to the Brian2 rate network glimpse by glimpse) from the same
initial weights on the same saccade streams, one with every input multiplied by ``1 + 0.01 N(0, 1)``
(:data:`~neuroplastic.engines.brian.fidelity.JITTER`, as the frozen-weight ceiling). Printed per seed and
layer: the correlation of the two runs' summed weight changes ``W_end - W_start``, and their mean ± SD.

The initial weights are the protocol's for that seed (drawn as the Brian2 engine draws them); the streams
are drawn like its training epochs' from a generator of their own.

usage: python benchmarks/training_ceiling.py [--protocol clapp_digits_spiking] [--seeds 2 3 4 5 6]
"""
from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from neuroplastic.api import load_protocol
from neuroplastic.engines.brian.fidelity import JITTER
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.stream import train_stream
from neuroplastic.engines.prepare import prepare, seed_sequence
from neuroplastic.rules import RULES
from neuroplastic.rules.clapp import init_dense_params
from neuroplastic.stimuli import saccade_stream


def ceiling(protocol_name: str, seed: int, jitter: float = JITTER, **overrides) -> list[float]:
    """Per layer, the correlation of the summed weight change of a clean and a jittered rate run
    (``overrides`` as :func:`neuroplastic.api.load_protocol`'s)."""
    protocol = load_protocol(protocol_name, seed=seed, engine__variant="rate", **overrides)
    prepared = prepare(protocol)
    patches = prepared.stimulus.patches.astype("float64")
    n_positions = patches.shape[1]
    sizes = [patches.shape[-1], *protocol.model.layers]
    rule = RULES[protocol.rule.name]
    start = init_dense_params(sizes, rule.retro, np.random.default_rng(seed_sequence(protocol, 0)), dtype="float64",
                              init_scale=protocol.model.init_scale, pred_init_scale=protocol.model.pred_init_scale)
    clean, jittered = (ClappStack(sizes, rule.name, {k: v.copy() for k, v in start.items()}) for _ in range(2))
    streams = np.random.default_rng(np.random.SeedSequence([seed, 101]))
    noise = np.random.default_rng(np.random.SeedSequence([seed, 102]))
    for _ in range(protocol.train.epochs):
        stream = saccade_stream(prepared.train_idx, n_positions, len(prepared.train_idx) * n_positions,
                                protocol.stimulus.saccade_prob, streams)
        x, y = stream.glimpses(patches), stream.y
        train_stream(clean, x, y, protocol.rule.lr)
        train_stream(jittered, x * (1 + jitter * noise.standard_normal(x.shape)), y, protocol.rule.lr)
    return [float(np.corrcoef(np.ravel(clean.params[f"{l}/W"] - start[f"{l}/W"]),
                              np.ravel(jittered.params[f"{l}/W"] - start[f"{l}/W"]))[0, 1])
            for l in range(1, len(sizes))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="clapp_digits_spiking")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    args = parser.parse_args(argv)
    rows = np.array([ceiling(args.protocol, seed) for seed in tqdm(args.seeds, desc="seeds")])
    for seed, row in zip(args.seeds, rows):
        print(f"seed {seed}: " + " / ".join(f"{r:.3f}" for r in row))
    sd = rows.std(0, ddof=1) if len(rows) > 1 else np.zeros(rows.shape[1])
    print(f"training ΔW correlation, rate vs rate with 1 % input jitter (layer 1 / 2 ..., {len(rows)} seeds): "
          + " / ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(rows.mean(0), sd)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
