"""
Rate vs spiking on the same protocol
====================================

The Brian2 engine simulates one network in two variants of the same two-compartment neuron:
**rate** neurons (one time step per glimpse, the numpy engine's neuron) and **spiking** neurons
(a leaky soma firing with a hazard proportional to its positive potential, synapses that
accumulate an eligibility trace during a glimpse and learn at its end). Everything else is
shared: protocol, seed, initial weights and glimpse stream.

This tutorial runs ``protocols/clapp_digits_spiking.toml`` twice, with ``engine.variant`` set to
``"rate"`` and to ``"spiking"``, and compares the two runs with :mod:`neuroplastic.compare`
(what ``neuroplastic compare`` prints) and the rate-vs-spiking figure of
:func:`neuroplastic.plots.rate_vs_spiking`.
"""

# %%
# Two runs of one protocol
# ------------------------
# The protocol's neurons, 150 ms glimpses at a 0.1 ms step and learning rate, on 300 digits for 3
# epochs; nine tenths of them train the encoders (``data.test_fraction=0.1``) and the probe scores
# every digit by 5-fold cross-validation. The spiking network runs on the protocol's ``cpp`` device:
# Brian2 compiles it once (a minute or two; the build is cached in ``~/.cache/neuroplastic/brian``)
# and then simulates an epoch's 2700 glimpses in seconds. The rate network takes one step per glimpse
# and runs on the ``runtime`` device, which needs no compiler. ``figures/rate_vs_spiking.toml``
# makes the same comparison at the quick scale (all 1797 digits, 5 epochs, 5 seeds).
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from neuroplastic.protocol import PROTOCOLS_DIR, load
from neuroplastic.results import Run
from neuroplastic.runner import run_protocol

small = ["data.max_samples=300", "data.test_fraction=0.1", "train.epochs=3"]
device = {"rate": "runtime", "spiking": "cpp"}
out = tempfile.mkdtemp(prefix="neuroplastic-tutorial-")
runs = {}
for variant in ("rate", "spiking"):
    protocol = load(PROTOCOLS_DIR / "clapp_digits_spiking.toml",
                    small + [f'engine.variant="{variant}"', f'engine.device="{device[variant]}"'])
    outcome = run_protocol(protocol, out, progress=False)
    run = runs[variant] = Run.load(outcome.directory)
    print(f"{variant}: {outcome.directory.name}, {run.manifest['elapsed_s']:.1f} s")
    initial, final = run.initial_params(), run.latest_checkpoint()[1]
    for layer, accuracy in outcome.summary["probe"].items():
        w0, w = initial[f"{layer}/W"], final[f"param/{layer}/W"]
        print(f"  layer {layer}: probe {accuracy:.3f}, random encoder {outcome.summary['probe_random'][layer]:.3f}, "
              f"weights moved |dW| / |W0| = {np.linalg.norm(w - w0) / np.linalg.norm(w0):.2f}")

# %%
# Compare them
# ------------
# :func:`~neuroplastic.compare.check_comparable` refuses runs of different architecture or data;
# :func:`~neuroplastic.compare.compare_runs` gives, per run and layer, the probe accuracy, the
# random encoder's, the final loss, and against the first run (rate) the cosine similarity of the
# feed-forward weights and the linear CKA of the probe features.
from neuroplastic.compare import check_comparable, compare_runs, comparison_figure, format_table

assert not check_comparable(list(runs.values()))
rows = compare_runs(list(runs.values()))
print(format_table(rows))
_ = comparison_figure(rows)

# %%
# The rate-vs-spiking figure
# --------------------------
# The figure of ``neuroplastic figures rate_vs_spiking``, drawn from these two runs: the spiking
# network's raster with the saccade events, the soma and dendrite of one neuron, how the weight
# changes of the two variants correlate, the CKA of their features and the probe accuracies.
from neuroplastic.plots import rate_vs_spiking

rate_vs_spiking({"rate": [runs["rate"]], "spiking": [runs["spiking"]]},
                title="CLAPP-s on 300 digits: rate and spiking Brian2 networks")
plt.show()

# %%
# Both networks learn: each probe reads its digits better than the same architecture with its initial,
# random weights (for the spiking network read from its spikes, like its trained features), far above
# chance (0.1), and the weights move by about a third of their norm. The two runs start from the same
# weights and see the same glimpse stream, so their weight changes can be correlated (``ΔW r``):
# nearly the same learning, and at frozen weights the spiking updates follow the rate rule's closely.
# At the quick scale (see the README, 5 seeds) the weight changes of training correlate at r = 0.93
# (layer 1) and 0.82 (layer 2), the frozen-weight updates at 0.95 in both layers, the linear CKA of
# the features is 0.96 and 0.89, and the spiking probe is within a point of the rate probe.
