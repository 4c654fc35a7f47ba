"""Matplotlib helpers shared by run summaries and figures. They read metrics rows, never recompute."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .evaluate import correlation  # noqa: E402
from .results import number  # noqa: E402

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


def _letter(ax, letter: str) -> None:
    """Panel letter in the top-left corner, outside the data."""
    ax.text(-0.04, 1.02, letter, transform=ax.transAxes, fontsize=13, fontweight="bold", ha="right", va="bottom")


def _note(ax, text: str) -> None:
    """An empty panel that says why it is empty (a run saved less than the panel needs)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3", wrap=True)
    ax.set(xticks=[], yticks=[])


def _stats(values) -> dict:
    """Mean and sample SD (ddof = 1) over seeds of the finite ``values``, and the values in seed order."""
    import numpy as np

    vals = [number(v) for v in values]
    ok = np.array([v for v in vals if np.isfinite(v)])
    return {"mean": float(ok.mean()) if len(ok) else float("nan"),
            "sd": float(ok.std(ddof=1)) if len(ok) >= 2 else float("nan"), "values": vals}


def _paired_test(a, b) -> dict:
    """``a - b`` over the seeds where both are finite: mean and the paired t-test (NaN below 2 seeds)."""
    import warnings

    import numpy as np
    from scipy.stats import ttest_rel

    a, b = np.array([number(v) for v in a]), np.array([number(v) for v in b])
    ok = np.isfinite(a) & np.isfinite(b)
    out = {"mean_diff": float(np.mean(a[ok] - b[ok])) if ok.any() else float("nan"),
           "t": float("nan"), "p": float("nan")}
    if ok.sum() >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):   # identical differences: t is undefined
            warnings.simplefilter("ignore")
            res = ttest_rel(a[ok], b[ok])
        out.update(t=float(res.statistic), p=float(res.pvalue))
    return out


def _pm(stat: dict) -> str:
    """``mean ± SD``, or the mean alone when there is no SD (one seed)."""
    import math

    return f"{stat['mean']:.2f}" + (f" ± {stat['sd']:.2f}" if math.isfinite(stat["sd"]) else "")


def _yerr(sd):
    """Error bars of the SDs, none at all when no SD is known (one seed), zero where one is missing."""
    import numpy as np

    sd = np.asarray(sd, dtype=float)
    return None if not np.isfinite(sd).any() else np.nan_to_num(sd)


def _pair_by_seed(runs: dict) -> list[tuple]:
    """``[(seed, rate run, spiking run, initial weights)]`` in the order of the spiking runs.

    Refuses groups whose seeds differ and pairs that did not start from the same weights: the figure's
    comparisons are only meaningful between two neuron models trained from one start.
    """
    import re

    import numpy as np

    if set(runs) != {"rate", "spiking"}:
        raise ValueError(f"the rate_vs_spiking figure needs runs labelled 'rate' and 'spiking', got {sorted(runs)}")
    by_seed = {}
    for label in ("rate", "spiking"):
        seeds = [r.manifest.get("seed") for r in runs[label]]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"the {label!r} runs need distinct seeds, one run per seed; got {seeds}")
        by_seed[label] = dict(zip(seeds, runs[label]))
    if set(by_seed["rate"]) != set(by_seed["spiking"]):
        raise ValueError("the 'rate' and 'spiking' runs are paired by seed and must have the same seeds; got rate "
                         f"{sorted(by_seed['rate'], key=str)} and spiking {sorted(by_seed['spiking'], key=str)}")
    pairs = []
    for seed, spiking in by_seed["spiking"].items():
        rate = by_seed["rate"][seed]
        w0r, w0s = rate.initial_params(), spiking.initial_params()
        shared = set(w0r) & set(w0s)
        layer_w = {k for k in set(w0r) | set(w0s) if re.fullmatch(r"\d+/W", k)}
        if not layer_w or not layer_w <= shared or any(
                np.shape(w0r[k]) != np.shape(w0s[k]) or not np.array_equal(w0r[k], w0s[k]) for k in shared):
            raise ValueError(f"seed {seed}: the rate run {rate.directory.name} and the spiking run "
                             f"{spiking.directory.name} did not start from the same initial weights")
        pairs.append((seed, rate, spiking, w0r))
    return pairs


def rate_vs_spiking(runs: dict, title: str = ""):
    """(d) One protocol with rate and spiking neurons, paired by seed (same seed, same initial weights).

    Panels: (a) raster and (b) soma/dendrite of the first seed's spiking run; (c) the weight changes of
    training, spiking vs rate; (d) frozen-weight fidelity of the spiking updates to the rate rule, with
    the rate rule's own 1 % jitter ceiling; (e) CKA of the probe features; (f) probe accuracy, trained
    and random encoders, read from spikes and as rates; (g) the layer-local losses. Error bars and
    ``sd`` are the sample SD (ddof = 1) over seeds; ``paired_tests`` are ``scipy.stats.ttest_rel`` over
    seeds. Keys an older run did not save are NaN in ``numbers`` and a note in their panel.
    """
    import re

    import numpy as np

    from .evaluate import linear_cka
    from .results import read_metrics

    pairs = _pair_by_seed(runs)
    seeds = [p[0] for p in pairs]
    n = len(seeds)
    sd_note = f"error bars: SD over n = {n} seed{'s' * (n != 1)}"
    first_rate, first_spiking = pairs[0][1], pairs[0][2]
    sum_r = _summaries([p[1] for p in pairs])
    sum_s = _summaries([p[2] for p in pairs])
    w_layers = sorted((k.split("/")[0] for k in pairs[0][3] if re.fullmatch(r"\d+/W", k)), key=int)
    numbers: dict = {"seeds": seeds}

    fig = plt.figure(figsize=(18, 8), constrained_layout=True)
    grid = fig.add_gridspec(2, 4)
    axes = {"a": fig.add_subplot(grid[0, :2]), "b": fig.add_subplot(grid[0, 2]), "c": fig.add_subplot(grid[0, 3]),
            "d": fig.add_subplot(grid[1, 0]), "e": fig.add_subplot(grid[1, 1]), "f": fig.add_subplot(grid[1, 2]),
            "g": fig.add_subplot(grid[1, 3])}
    for letter, ax in axes.items():
        _letter(ax, letter)

    def _load(run, name):
        try:
            return _npz(run, name)
        except (OSError, ValueError):
            return {}

    mon, spk = _load(first_spiking, "brian_monitors"), _load(first_spiking, "brian_spikes")
    glimpse_s = first_spiking.manifest["protocol"]["stimulus"]["glimpse_ms"] / 1000
    n_glimpses = 12
    y = np.asarray(mon.get("y", []))

    ax = axes["a"]                                    # spike raster of layer 1 with the saccade events
    if "layer1/t_s" in spk and "layer1/i" in spk:
        t, i = spk["layer1/t_s"], spk["layer1/i"]
        keep = t < n_glimpses * glimpse_s
        ax.scatter(t[keep] * 1000, i[keep], s=2, color="k", marker="|")
        for k in range(1, min(n_glimpses, len(y))):
            ax.axvline(k * glimpse_s * 1000, color=SACCADE if y[k] < 0 else FIXATION, lw=1.5, alpha=0.7)
        ax.set(xlabel="time (ms)", ylabel="neuron (layer 1)",
               title=f"spikes, seed {seeds[0]}; lines: saccade (orange) / fixation (blue)")
        ax.yaxis.get_major_locator().set_params(integer=True)
    else:
        _note(ax, "no spike recording (brian_spikes.npz layer1) in the spiking run")

    ax = axes["b"]                                    # soma and dendrite of one neuron, both continuous traces
    if all(k in mon for k in ("layer1/t_s", "layer1/v", "layer1/d")):
        ts = mon["layer1/t_s"]
        keep = ts < n_glimpses * glimpse_s
        v, d = mon["layer1/v"][keep], mon["layer1/d"][keep]
        ax.plot(ts[keep] * 1000, v, color=PALETTE[0], lw=1, label="soma v")
        ax.plot(ts[keep] * 1000, d, color=PALETTE[1], lw=1.5, label="dendrite d")
        lo, hi = np.nanmin(np.r_[v, d, 0.0]), np.nanmax(np.r_[v, d, 0.0])
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.35 * (hi - lo + 1e-12))   # a free band for the legend
        ax.set(xlabel="time (ms)", ylabel="potential (rate units)", title="neuron 0 of layer 1")
        ax.legend(fontsize="small", frameon=False, loc="upper right", ncols=2)
    else:
        _note(ax, "no soma/dendrite recording\n(brian_monitors.npz layer1/v, layer1/d)")

    ax = axes["c"]                                    # weight changes of training, spiking vs rate
    corr = {l: [] for l in w_layers}
    for k, (seed, rate, spiking, w0) in enumerate(pairs):
        finals = [(ckpt[1] if (ckpt := run.latest_checkpoint()) is not None else {}) for run in (rate, spiking)]
        for j, l in enumerate(w_layers):
            dr, ds = (f.get(f"param/{l}/W") for f in finals)
            dr = None if dr is None else dr - w0[f"{l}/W"]
            ds = None if ds is None else ds - w0[f"{l}/W"]
            corr[l].append(correlation(dr, ds))
            if k == 0 and dr is not None and ds is not None and dr.shape == ds.shape:
                ax.scatter(dr.ravel(), ds.ravel(), s=3, alpha=0.4, color=PALETTE[(2, 5, 4, 3)[j % 4]],
                           label=f"layer {l}")
    numbers["delta_w_correlation"] = {l: _stats(v) for l, v in corr.items()}
    if ax.collections:
        lim = max(max(np.abs(c.get_offsets()).max() for c in ax.collections), 1e-12)
        ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, label="identity")
        ax.legend(fontsize="small", frameon=False, loc="upper left", markerscale=3)
    else:
        _note(ax, "no final weights to compare")
    ax.set(xlabel=f"ΔW rate (final − initial, seed {seeds[0]})", ylabel="ΔW spiking")
    ax.set_title("weight change: r = " + ", ".join(
        f"{_pm(numbers['delta_w_correlation'][l])} (L{l})"
        for l in w_layers) + f"\nmean ± SD over n = {n} seeds", fontsize="medium")

    ax = axes["d"]                                    # frozen-weight fidelity, with the rate-vs-rate ceiling
    measures = (("dw_correlation", "ΔW r", 0.98), ("gate_agreement", "gates", 0.95), ("norm_ratio", "norm ratio", 1.0))
    fid = [s.get("fidelity") if isinstance(s.get("fidelity"), dict) else {} for s in sum_s]
    for part in ("frozen", "ceiling"):
        numbers[part] = {m: {l: _stats([((f.get(part) or {}).get(m) or {}).get(l) for f in fid]) for l in w_layers}
                         for m, _, _ in measures}
    if any(f.get("frozen") for f in fid):
        width = 0.8 / len(measures)
        top = 1.05
        for j, (m, name, target) in enumerate(measures):
            xs = np.arange(len(w_layers)) + (j - 1) * width
            mean = np.array([numbers["frozen"][m][l]["mean"] for l in w_layers])
            sd = np.nan_to_num([numbers["frozen"][m][l]["sd"] for l in w_layers])
            ceil = np.array([numbers["ceiling"][m][l]["mean"] for l in w_layers])
            ax.bar(xs, mean, width, yerr=_yerr(sd), color=PALETTE[(0, 2, 3)[j]], ecolor="0.3", capsize=2, label=name)
            ax.scatter(xs, ceil, marker="D", s=14, color="k", zorder=3,
                       label="rate vs rate, 1% input jitter (ceiling)" if j == 0 else None)
            if m == "norm_ratio":
                for x in xs:
                    ax.fill_between([x - width / 2, x + width / 2], 0.9, 1.1, color="0.5", alpha=0.25, lw=0,
                                    label="target band 0.9–1.1" if x == xs[0] else None)
            else:
                ax.hlines(np.full(len(xs), target), xs - width / 2, xs + width / 2, colors="k", linestyles="--", lw=0.8,
                          label="targets: r 0.98, gates 0.95" if j == 0 else None)
            top = max(top, np.nanmax(np.r_[mean + sd, ceil, 1.1]) * 1.05)
        ax.set(xticks=range(len(w_layers)), xticklabels=[f"layer {l}" for l in w_layers], ylim=(0, top),
               ylabel="spiking vs rate rule")
        handles, names = ax.get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda k: names[k] not in {name for _, name, _ in measures})
        ax.legend([handles[k] for k in order], [names[k] for k in order], fontsize="x-small", frameon=False,
                  loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2)
        glimpses = [g for f in fid if np.isfinite(g := number(f.get("glimpses")))]
        epoch = f" ({np.mean(glimpses):.0f} glimpses)" if glimpses else ""
        ax.set_title(f"frozen-weight fidelity, one epoch{epoch}\n{sd_note}", fontsize="medium")
    else:
        _note(ax, "no run saved its frozen-weight fidelity\n(summary.json 'fidelity')")
        ax.set_title("frozen-weight fidelity", fontsize="medium")

    ax = axes["e"]                                    # CKA between the two representations
    feats = [(_load(rate, "features"), _load(spiking, "features")) for _, rate, spiking, _ in pairs]
    f_layers = sorted({k[len("layer"):] for fr, fs in feats for k in fr if re.fullmatch(r"layer\d+", k) and k in fs},
                      key=int)
    cka = {}
    for l in f_layers:
        vals = []
        for fr, fs in feats:
            a, b = fr.get(f"layer{l}"), fs.get(f"layer{l}")
            vals.append(linear_cka(a, b) if a is not None and b is not None and len(a) == len(b) else np.nan)
        cka[l] = _stats(vals)
    numbers["cka"] = cka
    if f_layers:
        ax.bar(range(len(f_layers)), [cka[l]["mean"] for l in f_layers], color=PALETTE[4],
               yerr=_yerr([cka[l]["sd"] for l in f_layers]), ecolor="0.3", capsize=3)
        ax.set(xticks=range(len(f_layers)), xticklabels=[f"layer {l}" for l in f_layers], ylim=(0, 1.05),
               ylabel="linear CKA (rate, spiking)")
    else:
        _note(ax, "no probe features (features.npz) in both runs")
    ax.set_title(f"representational similarity\n{sd_note}", fontsize="medium")

    ax = axes["f"]                                    # probe accuracy: trained and random, from spikes and as rates
    p_layers = sorted({l for s in sum_r + sum_s for l in s.get("probe", {})}, key=int)
    sources = (("rate", sum_r, "probe", PALETTE[0]), ("spiking", sum_s, "probe", PALETTE[1]),
               ("random (spikes)", sum_s, "probe_random", "0.45"),
               ("random (rates)", sum_s, "probe_random_rates", "0.75"))
    probe = {label: {l: _stats([(s.get(key) or {}).get(l) for s in ss]) for l in p_layers}
             for label, ss, key, _ in sources}
    numbers["probe"] = probe
    width = 0.8 / len(sources)
    for k, (label, _, _, colour) in enumerate(sources):
        xs = np.arange(len(p_layers)) + (k - (len(sources) - 1) / 2) * width
        ax.bar(xs, [probe[label][l]["mean"] for l in p_layers], width, color=colour, label=label,
               yerr=_yerr([probe[label][l]["sd"] for l in p_layers]), ecolor="0.2", capsize=2)
    labels = next((f["labels"] for pair in feats for f in pair if "labels" in f), None)
    if labels is not None and len(np.unique(labels)):
        classes = len(np.unique(labels))
        ax.axhline(1 / classes, color="k", ls=":", lw=1, label=f"chance (1/{classes})")
    ax.set(xticks=range(len(p_layers)), xticklabels=[f"layer {l}" for l in p_layers], ylim=(0, 1),
           ylabel="linear-probe test accuracy")
    ax.set_title(f"probe\n{sd_note}", fontsize="medium")
    ax.legend(fontsize="x-small", frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=3)
    numbers["paired_tests"] = {
        l: {"spiking - rate": _paired_test(probe["spiking"][l]["values"], probe["rate"][l]["values"]),
            "spiking - random (rates)": _paired_test(probe["spiking"][l]["values"],
                                                     probe["random (rates)"][l]["values"])}
        for l in p_layers}

    ax = axes["g"]                                    # learning curves, mean ± SD over seeds
    for c, (label, group) in enumerate((("rate", [p[1] for p in pairs]), ("spiking", [p[2] for p in pairs]))):
        rows = [read_metrics(run.directory) for run in group]
        for l in w_layers:
            curves = [[m["value"] for m in rs if m["stage"] == "train" and m["layer"] == int(l) and m["name"] == "loss"]
                      for rs in rows]
            length = min(map(len, curves))
            if not length:
                continue
            values = np.array([cv[:length] for cv in curves])
            epochs = np.arange(1, length + 1)
            mean = values.mean(0)
            ax.plot(epochs, mean, ("-", "--")[int(l) % 2 == 0], marker="o", ms=3, color=PALETTE[c],
                    label=f"{label}, layer {l}")
            if len(values) >= 2:
                sd = values.std(0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=PALETTE[c], alpha=0.2, lw=0)
    if ax.lines:
        ax.legend(fontsize="small", frameon=False)
    else:
        _note(ax, "no training losses (metrics.csv)")
    ax.set(xlabel="epoch", ylabel="layer-local hinge loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"loss (bands: SD over n = {n} seed{'s' * (n != 1)})", fontsize="medium")
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
