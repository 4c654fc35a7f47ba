"""Matplotlib helpers shared by run summaries and figures. They read metrics rows, never recompute."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["FIGURES", "PALETTE", "learning_curves", "performance", "probe_comparison", "rate_vs_spiking", "run_summary",
           "saccade_protocol"]

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
    axes[0].set(xlabel="epoch", ylabel="layer-local hinge loss", title="training loss per layer")
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


# -- figures (neuroplastic figures): each takes {label: [Run, ...]} and returns (figure, numbers shown) ------

FIXATION, SACCADE = PALETTE[0], PALETTE[5]


def _npz(run, name: str) -> dict:
    import numpy as np

    path = run.directory / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{run.directory}: no {name}.npz (the figure needs a run of the Brian2 engine)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _summaries(runs) -> list[dict]:
    import json

    return [json.loads((r.directory / "summary.json").read_text()) for r in runs]


def saccade_protocol(runs: dict, title: str = ""):
    """(a) The stimulus protocol: the first glimpses with fixation/saccade marks, and M over time."""
    import numpy as np

    run = next(iter(runs.values()))[0]
    mon = _npz(run, "brian_monitors")
    n_show, n_steps = 16, 60
    x, y, image = mon["x"], mon["y"], mon["image"]
    layers = sorted({k.split("/")[0] for k in mon if k.startswith("layer") and k.endswith("/M")})
    side = int(round(np.sqrt(x.shape[1])))
    fig = plt.figure(figsize=(12, 5.2), constrained_layout=True)
    grid = fig.add_gridspec(2 + len(layers), n_show, height_ratios=[1.1, 0.9] + [1.2] * len(layers))
    for k in range(min(n_show, len(x))):
        ax = fig.add_subplot(grid[0, k])
        tile = x[k].reshape(side, side) if side * side == x.shape[1] else x[k][None, :]
        ax.imshow(tile, cmap="gray_r", vmin=0, vmax=1, aspect="auto")
        colour = {1.0: FIXATION, -1.0: SACCADE}.get(float(y[k]), "0.6")
        for s in ax.spines.values():
            s.set(color=colour, linewidth=3)
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"img {image[k]}", fontsize=7)
    steps = np.arange(min(n_steps, len(y)))
    ax = fig.add_subplot(grid[1, :])
    ax.step(steps, image[steps], where="post", color="0.3")
    sac = steps[y[steps] < 0]
    ax.scatter(sac, image[sac], color=SACCADE, zorder=3, s=18, label="saccade (y = −1)")
    fix = steps[y[steps] > 0]
    ax.scatter(fix, image[fix], color=FIXATION, zorder=3, s=8, label="fixation (y = +1)")
    ax.set(ylabel="image", xlim=(-0.5, steps[-1] + 0.5), xticklabels=[])
    ax.legend(loc="upper right", fontsize="small", ncols=2, frameon=False)
    numbers = {}
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(grid[2 + i, :])
        u, m = mon[f"{layer}/u"][steps], mon[f"{layer}/M"][steps]
        ax.plot(steps, u, color="0.3", lw=1, label="score u (left)")
        ax.axhline(1, color="0.7", lw=0.8, ls="--")
        ax.axhline(-1, color="0.7", lw=0.8, ls="--")
        ax.set(ylabel=f"{layer.replace('layer', 'layer ')}: u", xlim=(-0.5, steps[-1] + 0.5))
        on = m != 0
        mx = ax.twinx()                          # M is ±1 or 0 whatever the scale of u
        mx.vlines(steps[on], 0, m[on], colors=[SACCADE if v < 0 else FIXATION for v in m[on]], lw=2.5,
                  label="modulation M (right)")
        mx.set(ylim=(-1.3, 1.3), yticks=[-1, 0, 1], ylabel="M")
        numbers[layer] = {"fraction_modulated": float(np.mean(mon[f"{layer}/M"][mon["y"] != 0] != 0))}
        if i == 0:
            handles = ax.get_legend_handles_labels()[0] + mx.get_legend_handles_labels()[0]
            mx.legend(handles=handles, loc="upper right", fontsize="small", ncols=2, frameon=False)
    ax.set_xlabel("glimpse (one step of the eye)")
    fig.suptitle(title or "saccade protocol")
    return fig, numbers


def learning_curves(runs: dict, title: str = ""):
    """(c) Layer-local loss and fraction of non-zero modulation events per epoch (mean ± std over seeds)."""
    import numpy as np

    from .results import read_metrics

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    styles = ("-", "--", ":", "-.")
    numbers = {}
    for c, (label, group) in enumerate(runs.items()):
        rows = [read_metrics(r.directory) for r in group]
        layers = sorted({m["layer"] for m in rows[0] if m["stage"] == "train"})
        for li, layer in enumerate(layers):
            for ax, name in zip(axes, ("loss", "modulated")):
                curves = [[m["value"] for m in rs if m["stage"] == "train" and m["layer"] == layer
                           and m["name"] == name] for rs in rows]
                n = min(map(len, curves))
                values = np.array([cv[:n] for cv in curves])
                epochs = np.arange(1, n + 1)
                mean, std = values.mean(0), values.std(0)
                ax.plot(epochs, mean, styles[li % 4], color=PALETTE[c % len(PALETTE)],
                        label=f"{label}, layer {layer}")
                ax.fill_between(epochs, mean - std, mean + std, color=PALETTE[c % len(PALETTE)], alpha=0.2, lw=0)
                numbers.setdefault(label, {})[f"layer{layer}/final_{name}"] = float(mean[-1])
    axes[0].set(xlabel="epoch", ylabel="layer-local hinge loss", title="loss")
    axes[1].set(xlabel="epoch", ylabel="fraction of pairs with M ≠ 0", title="modulation events", ylim=(0, 1.02))
    axes[0].legend(fontsize="small", frameon=False)
    fig.suptitle(title or "learning curves")
    return fig, numbers


def probe_comparison(runs: dict, title: str = ""):
    """(b) Linear-probe accuracy per layer for every method (mean ± std over seeds).

    Each bar carries a black tick: the random-weight encoder of that run's own architecture and input
    (rules that see glimpses and rules that see whole images have different random baselines).
    """
    import numpy as np

    groups = {label: _summaries(group) for label, group in runs.items()}
    layers = sorted({int(l) for ss in groups.values() for s in ss for l in s["probe"]})
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(groups) * len(layers) + 2), 4), constrained_layout=True)
    width = 0.8 / len(groups)
    numbers = {}
    for k, (label, ss) in enumerate(groups.items()):
        acc = np.array([[s["probe"].get(str(l), np.nan) for l in layers] for s in ss])
        rand = np.array([[s.get("probe_random", {}).get(str(l), np.nan) for l in layers] for s in ss])
        mean, std = np.nanmean(acc, 0), np.nanstd(acc, 0)
        xs = np.arange(len(layers)) + (k - (len(groups) - 1) / 2) * width
        colours = PALETTE[:-1]                   # black is the random encoder's mark
        ax.bar(xs, mean, width, color=colours[k % len(colours)], hatch="//" if k >= len(colours) else None,
               edgecolor="white", label=f"{label} (n={len(ss)})")
        ax.errorbar(xs, mean, std, fmt="none", ecolor="0.3", lw=1)
        ax.hlines(np.nanmean(rand, 0), xs - width / 2, xs + width / 2, colors="k", lw=2.5, zorder=3,
                  label="random encoder" if k == 0 else None)
        numbers[label] = {f"layer{l}": {"trained": [float(m), float(s)],
                                        "random": [float(np.nanmean(r)), float(np.nanstd(r))]}
                          for l, m, s, r in zip(layers, mean, std, rand.T)}
    lo = min(min(min(v["trained"][0], v["random"][0]) for v in d.values()) for d in numbers.values())
    ax.set(xticks=range(len(layers)), xticklabels=[f"layer {l}" for l in layers], ylim=(max(0, lo - 0.05), 1),
           ylabel="linear-probe test accuracy")
    ax.legend(fontsize="small", ncols=min(5, len(groups) + 1), loc="upper center", bbox_to_anchor=(0.5, -0.08),
              frameon=False)
    fig.suptitle(title or "linear probe per layer")
    return fig, numbers


def rate_vs_spiking(runs: dict, title: str = ""):
    """(d) The same protocol with rate and spiking neurons: raster, soma/dendrite, ΔW, CKA, probe."""
    import numpy as np

    from .evaluate import linear_cka
    from .results import read_metrics

    if set(runs) != {"rate", "spiking"}:
        raise ValueError(f"the rate_vs_spiking figure needs runs labelled 'rate' and 'spiking', got {sorted(runs)}")
    rate, spiking = runs["rate"][0], runs["spiking"][0]
    mon, spk = _npz(spiking, "brian_monitors"), _npz(spiking, "brian_spikes")
    glimpse_s = spiking.manifest["protocol"]["stimulus"]["glimpse_ms"] / 1000
    n_glimpses = 12
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.6), constrained_layout=True)
    numbers: dict = {}

    ax = axes[0, 0]                                   # spike raster of layer 1 with the saccade events
    t, i = spk["layer1/t_s"], spk["layer1/i"]
    keep = t < n_glimpses * glimpse_s
    ax.scatter(t[keep] * 1000, i[keep], s=2, color="k", marker="|")
    for k in range(1, n_glimpses):
        ax.axvline(k * glimpse_s * 1000, color=SACCADE if mon["y"][k] < 0 else FIXATION, lw=1.5, alpha=0.7)
    ax.set(xlabel="time (ms)", ylabel="neuron (layer 1)", title="spikes; lines: saccade (orange) / fixation (blue)")
    ax.yaxis.get_major_locator().set_params(integer=True)

    ax = axes[0, 1]                                   # soma and dendrite of one neuron
    ts, v, d = mon["layer1/t_s"], mon["layer1/v"], mon["layer1/d"]
    keep = ts < n_glimpses * glimpse_s
    ax.plot(ts[keep] * 1000, v[keep], color=PALETTE[0], lw=1, label="soma v (≈ W x)")
    ax.step(ts[keep] * 1000, d[keep], where="post", color=PALETTE[1], lw=1.5, label="dendrite d (W_pred z_prev)")
    ax.set(xlabel="time (ms)", ylabel="potential (rate units)", title="neuron 0 of layer 1")
    ax.legend(fontsize="small", frameon=False)

    ax = axes[0, 2]                                   # weight changes of rate vs spiking from the same start
    w0_r, w0_s = rate.initial_params(), spiking.initial_params()
    w_r, w_s = rate.latest_checkpoint()[1], spiking.latest_checkpoint()[1]
    n_layers = len(rate.manifest["protocol"]["model"]["layers"])
    corr = []
    for l in range(n_layers):
        key = f"{l + 1}/W"
        if not np.array_equal(w0_r[key], w0_s[key]):
            raise ValueError("the rate and spiking runs did not start from the same weights; use the same seed")
        dr, ds = w_r[f"param/{key}"] - w0_r[key], w_s[f"param/{key}"] - w0_s[key]
        corr.append(float(np.corrcoef(dr.ravel(), ds.ravel())[0, 1]))
        if l == 0:
            ax.scatter(dr.ravel(), ds.ravel(), s=3, alpha=0.4, color=PALETTE[2])
            lim = np.abs(np.concatenate([dr.ravel(), ds.ravel()])).max()
            ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8)
    ax.set(xlabel="ΔW rate (layer 1)", ylabel="ΔW spiking (layer 1)",
           title="weight change, r = " + ", ".join(f"{c:.2f}" for c in corr) + " (layers)")
    numbers["delta_w_correlation"] = corr

    ax = axes[1, 0]                                   # learning curves
    for c, (label, run) in enumerate((("rate", rate), ("spiking", spiking))):
        rows = read_metrics(run.directory)
        for l in range(1, n_layers + 1):
            pts = [(m["epoch"], m["value"]) for m in rows if m["stage"] == "train" and m["layer"] == l
                   and m["name"] == "loss"]
            ax.plot(*zip(*pts), ("-", "--")[l % 2 == 0], marker="o", ms=3, color=PALETTE[c],
                    label=f"{label}, layer {l}")
    ax.set(xlabel="epoch", ylabel="layer-local hinge loss", title="loss")
    ax.legend(fontsize="small", frameon=False)

    ax = axes[1, 1]                                   # CKA between the two representations
    fr, fs = _npz(rate, "features"), _npz(spiking, "features")
    layers = sorted(k for k in fr if k.startswith("layer") and k in fs)
    cka = [linear_cka(fr[k], fs[k]) for k in layers]
    ax.bar(range(len(layers)), cka, color=PALETTE[4])
    ax.set(xticks=range(len(layers)), xticklabels=[k.replace("layer", "layer ") for k in layers], ylim=(0, 1),
           ylabel="linear CKA (rate, spiking)", title="representational similarity")
    numbers["cka"] = dict(zip(layers, cka))

    ax = axes[1, 2]                                   # probe accuracy side by side
    (sr,), (ss,) = _summaries([rate]), _summaries([spiking])
    ls = sorted(sr["probe"], key=int)
    width = 0.27
    for k, (label, vals) in enumerate((("rate", sr["probe"]), ("spiking", ss["probe"]),
                                       ("random (spiking)", ss.get("probe_random", {})))):
        ax.bar(np.arange(len(ls)) + (k - 1) * width, [vals.get(l, np.nan) for l in ls], width,
               color=(PALETTE[0], PALETTE[1], "0.55")[k], label=label)
        numbers[f"probe_{label}"] = {l: vals.get(l) for l in ls}
    lo = min(v for d in (sr["probe"], ss["probe"], ss.get("probe_random", {})) for v in d.values())
    ax.set(xticks=range(len(ls)), xticklabels=[f"layer {l}" for l in ls], ylim=(max(0, lo - 0.1), 1),
           ylabel="linear-probe test accuracy", title="probe")
    ax.legend(fontsize="small", frameon=False, loc="upper left")
    fig.suptitle(title or "rate vs spiking")
    return fig, numbers


def performance(runs: dict, title: str = "", bench: dict | None = None):
    """(e) Every ratio the benchmarks measured, with its target (bars: met blue, missed orange, no target grey)."""
    items, skipped = [], []
    for name, res in (bench or {}).items():
        if "ratios" not in res:
            skipped.append(f"{name}: {res.get('skipped') or 'failed'}")
            continue
        for label, r in res["ratios"].items():
            items.append((f"{name}: {label}", r["value"], r.get("target", "")))
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(3, len(items)) + 1.2), constrained_layout=True)
    lo = 1e-2                    # accuracy checks (e.g. weight differences ~1e-15) would squash the ratios
    numbers = {}
    for k, (label, value, target) in enumerate(items):
        colour = "0.6"
        if target:
            op, bound = target.split()
            met = value <= float(bound) if op == "<=" else value >= float(bound)
            colour = PALETTE[0] if met else PALETTE[5]
            if float(bound) >= lo:
                ax.plot([float(bound)] * 2, [k - 0.4, k + 0.4], color="k", lw=2)
        ax.barh(k, value, color=colour)
        ax.text(max(value, lo), k, f" {value:.3g}" + (f"  (target {target})" if target else ""), va="center",
                fontsize=8)
        numbers[label] = {"value": value, "target": target}
    ax.set(yticks=range(len(items)), yticklabels=[i[0] for i in items], xscale="log", xlim=(lo, 1e3),
           xlabel="ratio (log scale; smaller values are written at the left edge); black ticks: targets")
    ax.invert_yaxis()
    if skipped:
        ax.set_title("not run: " + "; ".join(skipped), fontsize=8, loc="left")
    fig.suptitle(title or "benchmarks")
    return fig, numbers


#: Plot functions a figure recipe may name (``plot = "..."``).
FIGURES = {"saccade_protocol": saccade_protocol, "learning_curves": learning_curves,
           "probe_comparison": probe_comparison, "rate_vs_spiking": rate_vs_spiking, "performance": performance}
