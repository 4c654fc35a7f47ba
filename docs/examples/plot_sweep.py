"""
Run a sweep
===========

``neuroplastic sweep`` runs a protocol over the product of ``--grid`` axes, in parallel. Every point
is an ordinary run in the results store, with the run directory ``neuroplastic run --set ...``
would make, so a point can be inspected, resumed or compared on its own. The sweep directory adds
a ``summary.csv`` with one row per point.

Here: CLAPP-s on digits (numpy engine, tiny sizes), three learning rates times two seeds, on two
worker processes.
"""

# %%
# The sweep
# ---------
# The command line, run from Python: ``neuroplastic sweep protocols/clapp_digits.toml --grid
# rule.lr=1e-4,1e-3,1e-2 --grid seed=1..2 --set ... --workers 2``. (The sweep starts its worker
# processes from a fork server; from a script of your own, call :func:`neuroplastic.sweep.sweep`
# under ``if __name__ == "__main__":``, or use the command as here.)
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from neuroplastic.protocol import PROTOCOLS_DIR


def neuroplastic(*args):
    """Run the ``neuroplastic`` command and show what it prints."""
    done = subprocess.run([sys.executable, "-m", "neuroplastic.cli", *map(str, args)],
                          capture_output=True, text=True)
    print(done.stdout.replace(str(out), "<out>"))
    if done.returncode:
        raise RuntimeError(done.stderr)


out = Path(tempfile.mkdtemp(prefix="neuroplastic-tutorial-"))
neuroplastic("sweep", PROTOCOLS_DIR / "clapp_digits.toml", "--grid", "rule.lr=1e-4,1e-3,1e-2", "--grid", "seed=1..2",
             "--set", "data.max_samples=400", "--set", "train.epochs=10", "--set", "model.layers=[32, 32]",
             "--workers", "2", "--out", out)

# %%
# The summary
# -----------
# ``summary.csv`` has the grid values, the status, the probe accuracy and final loss of every layer,
# the time and the run directory of each point.
sweep_dir = next(out.glob("clapp_digits-sweep-*"))
rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
print(", ".join(rows[0]))

fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
for seed in sorted({r["seed"] for r in rows}):
    mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: float(r["rule.lr"]))
    lrs = [float(r["rule.lr"]) for r in mine]
    for layer, style in (("1", "o-"), ("2", "s--")):
        ax.plot(lrs, [float(r[f"probe/{layer}"]) for r in mine], style, label=f"seed {seed}, layer {layer}")
ax.set(xscale="log", xlabel="[rule] lr", ylabel="linear-probe accuracy", title="a sweep over the learning rate")
ax.legend(fontsize="small")
plt.show()

# %%
# Compare the points
# ------------------
# A sweep directory stands for all its runs in ``neuroplastic compare`` (here its functions from
# :mod:`neuroplastic.compare`); the first point is the reference for the weight similarity and the
# CKA of the features. Points of one seed start from the same weights, so their similarity shows
# how far each learning rate moved them.
from neuroplastic.compare import compare_runs, comparison_figure, expand_runs, format_table

comparison = compare_runs(expand_runs([sweep_dir]))
print(format_table(comparison))
comparison_figure(comparison)
plt.show()

# %%
# Running the same sweep command again runs only the points that are missing, failed or
# unfinished. On a dask.distributed cluster, ``--scheduler tcp://HOST:8786`` sends the points to its
# workers (``pip install neuroplastic[sweep]``).
