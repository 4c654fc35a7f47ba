"""Matplotlib helpers shared by run summaries and figures. They read metrics rows, never recompute."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["PALETTE", "run_summary"]

#: Okabe-Ito colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def run_summary(rows: list[dict], title: str = ""):
    """Layer losses per epoch, fraction of modulated pairs, and probe accuracy trained vs random."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    layers = sorted({r["layer"] for r in rows if r["stage"] == "train"})
    for k, layer in enumerate(layers):
        for ax, name in zip(axes[:2], ("loss", "modulated")):
            pts = [(r["epoch"], r["value"]) for r in rows
                   if r["stage"] == "train" and r["layer"] == layer and r["name"] == name]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, color=PALETTE[k % len(PALETTE)], label=f"layer {layer}")
    axes[0].set(xlabel="epoch", ylabel="layer-local hinge loss", title="CLAPP loss")
    axes[1].set(xlabel="epoch", ylabel="fraction of pairs with γ ≠ 0", title="modulation events")
    axes[0].legend(frameon=False)
    probe = {r["layer"]: r["value"] for r in rows if r["stage"] == "probe"}
    rand = {r["layer"]: r["value"] for r in rows if r["stage"] == "probe_random"}
    ax = axes[2]
    xs = sorted(probe)
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [probe[x] for x in xs], width, color=PALETTE[0], label="trained")
    if rand:
        ax.bar([x + width / 2 for x in xs], [rand.get(x, float("nan")) for x in xs], width,
               color=PALETTE[1], label="random weights")
    lo = min([*probe.values(), *rand.values()], default=0.0)
    ax.set(xlabel="layer", ylabel="linear-probe test accuracy", title="probe", xticks=xs,
           ylim=(max(0.0, lo - 0.1), 1.0))
    ax.legend(frameon=False, loc="upper left", ncols=2)
    if title:
        fig.suptitle(title)
    return fig
