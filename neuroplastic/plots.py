"""Matplotlib helpers shared by run summaries and figures. They read metrics rows, never recompute.

The look is shared so that figures can sit side by side in a talk: one Okabe-Ito colour and one marker
per method, the same in every figure (:func:`method_styles`); layers told apart by line style or x
position, never by a method's colour; accuracy axes from 0 to 1 with the chance level; panel letters;
legends outside the data; error bars said to be SD and over how many seeds.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .evaluate import correlation  # noqa: E402
from .results import number  # noqa: E402

__all__ = ["FIGURES", "METHOD_STYLES", "PALETTE", "learning_curves", "method_styles", "performance",
           "probe_comparison", "rate_vs_spiking", "run_summary", "saccade_protocol"]

#: Okabe-Ito colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
GREY = "#999999"

#: Colour and marker of every method a shipped figure shows, by its label: the same in every figure.
#: Okabe-Ito's eight colours and a grey for the ninth method; no colour twice among the methods of
#: one figure. ``rate``/``spiking`` are the two neuron models of figure (d), kept off the blue and
#: vermillion of fixations and saccades.
METHOD_STYLES = {
    "CLAPP-s": ("#0072B2", "o"), "CLAPP": ("#E69F00", "s"), "hinge E2E BP": ("#009E73", "^"),
    "hinge E2E FA": ("#CC79A7", "v"), "GLL-BP": ("#56B4E9", "D"), "GLL-RF": ("#D55E00", "P"),
    "GLL-URF": ("#F0E442", "X"), "RLL": ("#000000", "*"), "DTP": (GREY, "h"),
    "rate": ("#009E73", "o"), "spiking": ("#CC79A7", "s"),
}
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p", "d", "8")
#: Events of the saccade protocol, in every figure that shows them.
FIXATION, SACCADE = PALETTE[0], PALETTE[5]
#: Layers: line style (curves) and shade (single-method panels); in bar charts, x position.
LAYER_LINES = ("-", "--", ":", "-.")
LAYER_SHADES = ("0.1", "0.5", "0.7", "0.85")
CHANCE = dict(color="k", ls=":", lw=1.2)


def method_styles(labels) -> dict[str, tuple[str, str]]:
    """``{label: (colour, marker)}`` with no colour or marker twice: known labels keep :data:`METHOD_STYLES`;
    any other takes the first free colour from a start fixed by its name (so it is the same in every
    figure that has room for it), from Okabe-Ito and grey, then from ``tab20``."""
    labels = list(dict.fromkeys(labels))
    out = {l: METHOD_STYLES[l] for l in labels if l in METHOD_STYLES}
    pool = [*PALETTE, GREY] + [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20").colors]
    for label in labels:
        if label in out:
            continue
        used = {c for c, _ in out.values()}
        used_m = {m for _, m in out.values()}
        start = zlib.crc32(label.encode())
        colour = next(c for c in pool[start % 9:] + pool[:start % 9] if c not in used)
        k = start % len(_MARKERS)
        marker = next((m for m in _MARKERS[k:] + _MARKERS[:k] if m not in used_m), _MARKERS[k])
        out[label] = (colour, marker)
    return {l: out[l] for l in labels}


def _letter(ax, letter: str) -> None:
    """Panel letter in the top-left corner, outside the data."""
    ax.text(-0.04, 1.02, letter, transform=ax.transAxes, fontsize=13, fontweight="bold", ha="right", va="bottom")


def _note(ax, text: str) -> None:
    """An empty panel that says why it is empty (a run saved less than the panel needs)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3", wrap=True)
    ax.set(xticks=[], yticks=[])


def _accuracy_axis(ax, classes: int | None, label: str = "linear-probe test accuracy") -> None:
    """Accuracy from 0 to 1 with the chance level 1/classes (or a word that it is not known)."""
    ax.set_ylim(0, 1)
    ax.set_ylabel(label)
    if classes:
        ax.axhline(1 / classes, **CHANCE, label=f"chance (1/{classes})", zorder=1)
    else:
        ax.text(0.99, 0.01, "chance: n/a (no labels saved)", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="0.4")


def _epoch_axis(ax, epochs) -> None:
    """Integer epochs; a single epoch is one tick in the middle of the axis."""
    epochs = sorted({int(e) for e in epochs})
    if len(epochs) == 1:
        ax.set(xticks=epochs, xlim=(epochs[0] - 1, epochs[0] + 1))
    elif len(epochs) <= 12:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _legend_beside(ax, **kw):
    """A legend to the right of the axes, outside the data."""
    kw.setdefault("fontsize", "small")
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, borderaxespad=0, **kw)


def _legend_below(ax, ncols: int = 2, **kw):
    """A legend under the axes (below its x label), outside the data."""
    kw.setdefault("fontsize", "small")
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False, ncols=ncols, **kw)


def _classes(directory) -> int | None:
    """Number of classes of the probe labels a run saved (``features.npz`` ``labels``), else None."""
    import numpy as np

    path = Path(directory) / "features.npz"
    try:
        with np.load(path) as data:
            return len(np.unique(data["labels"])) if "labels" in data.files else None
    except (OSError, ValueError, KeyError):
        return None


# -- the run summary (summary.png of every run) ---------------------------------------------------------------

_MODULATION = {          # what a rule's "modulated" metric counts, and what it is called
    "clapp": ("fraction of pairs with γ ≠ 0", "modulation events (γ ≠ 0)"),
    "hinge": ("fraction of active hinge terms", "active hinge terms (no γ in this rule)"),
}


def _run_meta(directory) -> dict:
    """What the run summary reads besides the metrics: the protocol of the manifest, the classes."""
    meta = {"protocol": {}, "classes": None}
    if directory is None:
        return meta
    try:
        meta["protocol"] = json.loads((Path(directory) / "manifest.json").read_text()).get("protocol") or {}
    except (OSError, ValueError):
        pass
    meta["classes"] = _classes(directory)
    return meta


def _raster(ax, directory, glimpse_ms, n_glimpses: int = 12) -> bool:
    """Spikes of every layer over the first glimpses (``brian_spikes.npz``), glimpse ends marked as
    fixation/saccade when ``brian_monitors.npz`` has ``y``. False when the run saved no spikes."""
    import numpy as np

    try:
        with np.load(Path(directory) / "brian_spikes.npz") as data:
            spikes = {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return False
    layers = sorted({int(k[len("layer"):].split("/")[0]) for k in spikes if k.endswith("/t_s")
                     and f"{k[:-len('/t_s')]}/i" in spikes})
    if not layers or not glimpse_ms:
        return False
    try:
        with np.load(Path(directory) / "brian_monitors.npz") as data:
            y = data["y"] if "y" in data.files else np.zeros(0)
    except (OSError, ValueError):
        y = np.zeros(0)
    glimpse_s = float(glimpse_ms) / 1000
    end = n_glimpses * glimpse_s
    offset, ticks = 0, []
    for l in layers:
        t, i = spikes[f"layer{l}/t_s"], spikes[f"layer{l}/i"]
        keep = t < end
        size = int(i.max()) + 1 if len(i) else 1
        ax.scatter(t[keep] * 1000, i[keep] + offset, s=2, color="k", marker="|", linewidths=0.6, rasterized=True)
        ticks.append((offset + size / 2, f"layer {l}"))
        offset += size + 2
        if l != layers[-1]:
            ax.axhline(offset - 1.5, color="0.6", lw=0.8)
    for k in range(1, min(n_glimpses, len(y))):
        if y[k] != 0:
            ax.axvline(k * glimpse_ms, lw=1.2, alpha=0.8, zorder=0,
                       **(dict(color=SACCADE, ls="-") if y[k] < 0 else dict(color=FIXATION, ls=":")))
    ax.set(xlim=(0, end * 1000), ylim=(-1, offset - 1), xlabel="time (ms)", ylabel="neuron",
           yticks=[p for p, _ in ticks], yticklabels=[n for _, n in ticks],
           title=f"spikes, first {n_glimpses} glimpses ({glimpse_ms:g} ms each)")
    ax.invert_yaxis()                            # layer 1 on top
    if len(y):
        _legend_beside(ax, handles=[Line2D([], [], color=SACCADE, ls="-", label="glimpse ends: saccade"),
                                    Line2D([], [], color=FIXATION, ls=":", label="glimpse ends: fixation")])
    return True


def run_summary(rows: list[dict], title: str = "", directory=None):
    """Layer losses and modulation events per epoch, probe accuracy trained vs random with the chance
    level, and for a spiking run the spike raster of its first glimpses.

    ``directory`` is the run's directory: its manifest names the rule (what "modulated" counts) and the
    glimpse length, ``features.npz`` the probe's classes (the chance level), ``brian_spikes.npz`` the
    spikes. Without it the summary shows what ``rows`` alone allow.
    """
    import numpy as np

    meta = _run_meta(directory)
    proto = meta["protocol"]
    rule = str((proto.get("rule") or {}).get("name", ""))
    glimpse_ms = (proto.get("stimulus") or {}).get("glimpse_ms")
    spiking = directory is not None and (Path(directory) / "brian_spikes.npz").is_file()
    if spiking:
        fig = plt.figure(figsize=(13, 7), constrained_layout=True)
        grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.1])
        axes = [fig.add_subplot(grid[0, k]) for k in range(3)] + [fig.add_subplot(grid[1, :])]
    else:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
        axes = list(axes)
    train = [r for r in rows if r["stage"] == "train"]
    layers = sorted({int(r["layer"]) for r in rows if r["stage"] in ("train", "probe")})
    epochs = sorted({int(r["epoch"]) for r in train})
    family = "clapp" if rule.startswith("clapp") else "hinge" if rule.startswith("hinge") else ""
    ylabel, mod_title = _MODULATION.get(family, ("fraction of modulated pairs", "modulation events"))
    for ax, name, what in ((axes[0], "loss", "loss"), (axes[1], "modulated", mod_title)):
        missing = []
        for layer in layers:
            pts = sorted((int(r["epoch"]), r["value"]) for r in train if int(r["layer"]) == layer and r["name"] == name)
            if not pts:
                missing.append(layer)
                continue
            k = (layer - 1) % len(LAYER_LINES)
            ax.plot(*zip(*pts), LAYER_LINES[k], marker="o", ms=4, color=LAYER_SHADES[k], label=f"layer {layer}")
            if len(pts) == 1:
                ax.annotate(f"{pts[0][1]:.4g}", pts[0], xytext=(6, 0), textcoords="offset points", va="center",
                            fontsize=8)
        if ax.lines:
            _epoch_axis(ax, epochs)
            if len(epochs) == 1:                 # one point per layer: a scale from 0, not a zoom on noise
                ax.set_ylim(0, 1.2 * max(max(l.get_ydata()) for l in ax.lines))
            handles, names = ax.get_legend_handles_labels()
            handles += [Line2D([], [], ls="none") for _ in missing]
            names += [f"layer {l}: n/a" for l in missing]
            _legend_below(ax, handles=handles, labels=names, ncols=min(4, len(names)))
        else:
            _note(ax, f"n/a: this run recorded no '{name}' per layer")
        ax.set_title(what if name == "modulated" else "training loss per layer")
    axes[0].set_ylabel("hinge loss" if family == "hinge" else "layer-local hinge loss")
    axes[1].set_ylabel(ylabel)
    if axes[1].lines:
        axes[1].set_ylim(0, 1.05)
    ax = axes[2]
    probe = {int(r["layer"]): r["value"] for r in rows if r["stage"] == "probe"}
    rand = {int(r["layer"]): r["value"] for r in rows if r["stage"] == "probe_random"}
    xs = sorted(probe)
    width = 0.38 if rand else 0.6
    bars = [("trained", probe, "0.25", "0.25", -width / 2 if rand else 0.0)]
    if rand:
        bars.append(("random weights", rand, "white", "0.25", width / 2))
    for label, values, face, edge, shift in bars:
        vals = [values.get(x, np.nan) for x in xs]
        ax.bar([x + shift for x in xs], vals, width, color=face, edgecolor=edge, lw=1, label=label)
        for x, v in zip(xs, vals):
            if np.isfinite(v):
                ax.text(x + shift, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    _accuracy_axis(ax, meta["classes"])
    ax.set(xlabel="layer", title="linear probe (one seed)", xticks=xs, xlim=(min(xs, default=1) - 0.6,
                                                                               max(xs, default=1) + 0.6))
    _legend_below(ax, ncols=3)
    if spiking and not _raster(axes[3], directory, glimpse_ms):
        _note(axes[3], "no spikes to show (brian_spikes.npz without layer<l>/t_s, layer<l>/i, or no glimpse_ms)")
    for ax, letter in zip(axes, "abcd"):
        _letter(ax, letter)
    if title:
        fig.suptitle(title)
    return fig


# -- figures (neuroplastic figures): each takes {label: [Run, ...]} and returns (figure, numbers shown) ------


def _npz(run, name: str) -> dict:
    import numpy as np

    path = run.directory / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{run.directory}: no {name}.npz (the figure needs a run of the Brian2 engine)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _summaries(runs) -> list[dict]:
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
    fig = plt.figure(figsize=(12, 5.6), constrained_layout=True)
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
        if k == 0:
            _letter(ax, "a")
    steps = np.arange(min(n_steps, len(y)))
    ax = fig.add_subplot(grid[1, :])
    _letter(ax, "b")
    ax.step(steps, image[steps], where="post", color="0.3", label="image on view")
    sac = steps[y[steps] < 0]
    ax.scatter(sac, image[sac], color=SACCADE, marker="s", zorder=3, s=18, label="saccade (y = −1)")
    fix = steps[y[steps] > 0]
    ax.scatter(fix, image[fix], color=FIXATION, marker="o", zorder=3, s=12, label="fixation (y = +1)")
    ax.set(ylabel="image", xlim=(-0.5, steps[-1] + 0.5), xticklabels=[])
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize="small", ncols=3, frameon=False, borderaxespad=0.1)
    numbers = {}
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(grid[2 + i, :])
        _letter(ax, "cdefgh"[i % 6])
        u, m = mon[f"{layer}/u"][steps], mon[f"{layer}/M"][steps]
        ax.plot(steps, u, color="0.3", lw=1, label="score u (left axis)")
        ax.axhline(1, color="0.7", lw=0.8, ls="--")
        ax.axhline(-1, color="0.7", lw=0.8, ls="--", label="u = ±1 (hinge margin)")
        ax.set(ylabel=f"{layer.replace('layer', 'layer ')}: u", xlim=(-0.5, steps[-1] + 0.5))
        on = m != 0
        mx = ax.twinx()                          # M is ±1 or 0 whatever the scale of u
        for sign, colour, name in ((1, FIXATION, "M = +1 (right axis)"), (-1, SACCADE, "M = −1 (right axis)")):
            sel = on & (np.sign(m) == sign)
            mx.vlines(steps[sel], 0, m[sel], colors=colour, lw=2.5, label=name)
        mx.set(ylim=(-1.3, 1.3), yticks=[-1, 0, 1], ylabel="M")
        numbers[layer] = {"fraction_modulated": float(np.mean(mon[f"{layer}/M"][mon["y"] != 0] != 0))}
        if i == 0:
            h1, n1 = ax.get_legend_handles_labels()
            h2, n2 = mx.get_legend_handles_labels()
            mx.legend(h1 + h2, n1 + n2, loc="lower right", bbox_to_anchor=(1, 1), fontsize="small", ncols=4,
                      frameon=False, borderaxespad=0.1)
        if i < len(layers) - 1:
            ax.set_xticklabels([])
    ax.set_xlabel("glimpse (one step of the eye)")
    fig.suptitle(title or "saccade protocol")
    return fig, numbers


def _seed_sd(values, axis=0):
    """Sample SD (ddof = 1) over seeds; NaN for a single seed."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if values.shape[axis] < 2:
        return np.full(np.delete(values.shape, axis), np.nan)
    return np.nanstd(values, axis=axis, ddof=1)


def learning_curves(runs: dict, title: str = ""):
    """(c) Layer-local loss and fraction of non-zero modulation events per epoch (mean ± SD over seeds).

    Methods by colour and marker, layers by line style. A method that records no modulation events is
    said to be n/a in that panel's legend, not drawn.
    """
    import numpy as np

    from .results import read_metrics

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    styles = method_styles(runs)
    numbers = {}
    n_seeds = sorted({len(g) for g in runs.values()})
    all_epochs = set()
    missing = {ax: [] for ax in axes}
    for label, group in runs.items():
        colour, marker = styles[label]
        rows = [read_metrics(r.directory) for r in group]
        layers = sorted({int(m["layer"]) for m in rows[0] if m["stage"] == "train"})
        for layer in layers:
            for ax, name in zip(axes, ("loss", "modulated")):
                curves = [[m["value"] for m in rs if m["stage"] == "train" and int(m["layer"]) == layer
                           and m["name"] == name] for rs in rows]
                n = min(map(len, curves))
                if not n:
                    missing[ax].append(f"{label}, layer {layer}: n/a")
                    continue
                values = np.array([cv[:n] for cv in curves])
                epochs = np.arange(1, n + 1)
                all_epochs.update(epochs.tolist())
                mean, sd = values.mean(0), _seed_sd(values)
                k = (layer - 1) % len(LAYER_LINES)
                ax.plot(epochs, mean, LAYER_LINES[k], color=colour, marker=marker, ms=5,
                        markevery=max(1, n // 10), mec="0.2" if colour == PALETTE[6] else colour,
                        label=f"{label}, layer {layer}")
                if np.isfinite(sd).any():
                    ax.fill_between(epochs, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)
                numbers.setdefault(label, {})[f"layer{layer}/final_{name}"] = float(mean[-1])
    for ax, ylabel, what in zip(axes, ("layer-local hinge loss", "fraction of pairs with M ≠ 0"),
                                ("loss", "modulation events")):
        _epoch_axis(ax, all_epochs or [1])
        ax.set(ylabel=ylabel, title=what)
    handles, names = axes[0].get_legend_handles_labels()      # one legend: the same curves in both panels
    for ax, what in zip(axes, ("loss", "modulation events")):
        handles += [Line2D([], [], ls="none") for _ in missing[ax]]
        names += [f"{m} ({what})" for m in missing[ax]]
    n = n_seeds[0] if len(n_seeds) == 1 else None
    band = f"bands: SD over\nn = {n} seeds" if n and n >= 2 else "n = 1 seed: no band" if n else "bands: SD over seeds"
    _legend_beside(axes[1], handles=handles, labels=names, title=band, title_fontsize="small")
    axes[1].set_ylim(0, 1.02)
    _letter(axes[0], "a")
    _letter(axes[1], "b")
    fig.suptitle(title or "learning curves")
    return fig, numbers


def probe_comparison(runs: dict, title: str = ""):
    """(b) Linear-probe accuracy per layer for every method (mean ± SD over seeds), with chance, and each
    method's gain over its own random-weight encoder.

    (a) Accuracy on an axis from 0 to 1; each bar says its mean and carries a black line edged in white:
    the random-weight encoder of that run's own architecture and input (rules that see glimpses and
    rules that see whole images have different random baselines). (b) The gain, trained minus random of
    the same run, in points, paired by seed: on a 0-1 axis differences of a few points do not show.
    (c) Only when runs record it (CLAPP): ``retro_distance`` = ||W_retro - W_pred^T||_F / ||W_pred||_F per
    layer over the epochs (epoch 0: before learning), mean ± SD over seeds: how far the learned
    retrodiction stays from the transpose that CLAPP-s reads (the weight-transport problem).
    """
    import numpy as np
    from matplotlib import patheffects

    from .results import read_metrics

    groups = {label: _summaries(group) for label, group in runs.items()}
    styles = method_styles(groups)
    layers = sorted({int(l) for ss in groups.values() for s in ss for l in s["probe"]})
    retro = {}                                  # label -> layer -> (epochs, values (seeds, epochs))
    for label, group in runs.items():
        rows = [[m for m in read_metrics(r.directory) if m["stage"] == "train" and m["name"] == "retro_distance"]
                for r in group]
        for layer in sorted({m["layer"] for rs in rows for m in rs}):
            curves = [[m["value"] for m in sorted(rs, key=lambda m: m["epoch"]) if m["layer"] == layer] for rs in rows]
            first = [s.get("retro_distance_initial", {}).get(str(layer)) for s in groups[label]]
            n = min(map(len, curves))
            if n:
                start = 0 if all(f is not None for f in first) else 1
                values = np.array([([f] if start == 0 else []) + cv[:n] for f, cv in zip(first, curves)])
                retro.setdefault(label, {})[layer] = (np.arange(start, n + 1), values)
    size = (max(8, 0.6 * len(groups) * len(layers) + 3.5), 6.6 + 2.4 * bool(retro))
    if retro:
        fig, (ax, gx, rx) = plt.subplots(3, 1, figsize=size, height_ratios=[3, 1.6, 1.8], constrained_layout=True)
        gx.sharex(ax)
        ax.tick_params(labelbottom=False)
    else:
        fig, (ax, gx) = plt.subplots(2, 1, figsize=size, sharex=True, height_ratios=[3, 1.6], constrained_layout=True)
    width = 0.8 / len(groups)
    numbers = {}
    n_seeds = sorted({len(ss) for ss in groups.values()})
    halo = [patheffects.withStroke(linewidth=4.5, foreground="white")]
    for k, (label, ss) in enumerate(groups.items()):
        colour, _ = styles[label]
        acc = np.array([[s["probe"].get(str(l), np.nan) for l in layers] for s in ss])
        rand = np.array([[s.get("probe_random", {}).get(str(l), np.nan) for l in layers] for s in ss])
        mean, sd = np.nanmean(acc, 0), _seed_sd(acc)
        xs = np.arange(len(layers)) + (k - (len(groups) - 1) / 2) * width
        bar = dict(color=colour, edgecolor="0.2", lw=0.6, ecolor="0.2", error_kw=dict(lw=1, capsize=2))
        ax.bar(xs, mean, width, label=f"{label} (n={len(ss)})", yerr=_yerr(sd), **bar)
        dark = colour in (PALETTE[0], PALETTE[7], PALETTE[5])
        for x, m in zip(xs, mean):
            if np.isfinite(m):
                ax.text(x, 0.3, f"{m:.3f}", rotation=90, ha="center", va="bottom", fontsize=7,
                        color="white" if dark else "k")
        r_mean = np.nanmean(rand, 0) if rand.size else np.full(len(layers), np.nan)
        ax.hlines(r_mean, xs - width / 2, xs + width / 2, colors="k", lw=2.2, zorder=3, path_effects=halo,
                  label="random encoder (mean)" if k == 0 else None)
        gain = 100 * (acc - rand)
        g_mean, g_sd = np.nanmean(gain, 0), _seed_sd(gain)
        gx.bar(xs, g_mean, width, yerr=_yerr(g_sd), **bar)
        numbers[label] = {f"layer{l}": {"trained": [float(m), float(s)],
                                        "random": [float(np.nanmean(r)), float(_seed_sd(r[:, None])[0])],
                                        "gain_points": [float(gm), float(gs)]}
                          for l, m, s, r, gm, gs in zip(layers, mean, sd, rand.T, g_mean, g_sd)}
    classes = {_classes(r.directory) for group in runs.values() for r in group[:1]}
    _accuracy_axis(ax, classes.pop() if len(classes) == 1 else None)
    gx.axhline(0, color="k", lw=0.8)
    gx.set(ylabel="gain over random\nencoder (points)", xticks=range(len(layers)),
           xticklabels=[f"layer {l}" for l in layers], xlim=(-0.5, len(layers) - 0.5))
    n = max(n_seeds)
    _legend_beside(ax, title="error bars: SD over seeds\n(n per method in brackets)" if n >= 2 else None,
                   title_fontsize="small")
    _letter(ax, "a")
    _letter(gx, "b")
    if retro:
        all_epochs = set()
        for label, curves in retro.items():
            colour, marker = styles[label]
            for layer, (epochs, values) in curves.items():
                mean, sd = values.mean(0), _seed_sd(values)
                all_epochs.update(epochs.tolist())
                rx.plot(epochs, mean, LAYER_LINES[(layer - 1) % len(LAYER_LINES)], color=colour, marker=marker,
                        ms=4, markevery=max(1, len(epochs) // 10), label=f"{label}, layer {layer}")
                if np.isfinite(sd).any():
                    rx.fill_between(epochs, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)
                numbers.setdefault(label, {}).setdefault(f"layer{layer}", {})["retro_distance"] = {
                    "epochs": [int(epochs[0]), int(epochs[-1])], "first": [float(mean[0]), float(sd[0])],
                    "last": [float(mean[-1]), float(sd[-1])]}
        _epoch_axis(rx, all_epochs)
        rx.set_ylim(0, None)
        rx.set(ylabel="‖W_retro − W_predᵀ‖\n/ ‖W_pred‖",
               xlabel="epoch (0: initial weights)", title="learned W_retro vs W_predᵀ (0: CLAPP-s)")
        n_retro = min(len(v[1]) for curves in retro.values() for v in curves.values())
        _legend_beside(rx, title="bands: SD over seeds" if n_retro >= 2 else "n = 1 seed: no band",
                       title_fontsize="small")
        _letter(rx, "c")
    fig.suptitle(title or "linear probe per layer")
    return fig, numbers


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
    training, spiking vs rate, one small panel per layer; (d) frozen-weight fidelity of the spiking
    updates to the rate rule, with the rate rule's own 1 % jitter ceiling; (e) CKA of the probe
    features; (f) probe accuracy, trained and random encoders, read from spikes and as rates; (g) the
    layer-local losses. Error bars and ``sd`` are the sample SD (ddof = 1) over seeds;
    ``paired_tests`` are ``scipy.stats.ttest_rel`` over seeds. Keys an older run did not save are NaN
    in ``numbers`` and a note in their panel. Rate and spiking keep their colours in every panel;
    layers are x positions or line styles; fixations and saccades are blue dotted and vermillion solid.
    """
    import re

    import numpy as np

    from .evaluate import linear_cka
    from .evaluate.similarity import MIN_SHARED, pair_samples, sample_ids
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
    styles = method_styles(["rate", "spiking"])
    RATE, SPIKING = styles["rate"][0], styles["spiking"][0]

    fig = plt.figure(figsize=(19, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 1)
    top = grid[0].subgridspec(1, 2 + max(1, len(w_layers)), width_ratios=[2.3, 1.3] + [1] * max(1, len(w_layers)))
    bottom = grid[1].subgridspec(1, 4)
    axes = {"a": fig.add_subplot(top[0, 0]), "b": fig.add_subplot(top[0, 1])}
    dw_axes = [fig.add_subplot(top[0, 2 + j]) for j in range(max(1, len(w_layers)))]
    axes["c"] = dw_axes[0]
    axes.update({k: fig.add_subplot(bottom[0, j]) for j, k in enumerate("defg")})
    for letter, ax in axes.items():
        _letter(ax, letter)

    def _load(run, name):
        try:
            return _npz(run, name)
        except (OSError, ValueError):
            return {}

    mon = _load(first_spiking, "brian_monitors")
    glimpse_ms = first_spiking.manifest["protocol"]["stimulus"]["glimpse_ms"]
    glimpse_s = glimpse_ms / 1000
    n_glimpses = 12

    ax = axes["a"]                                    # spike raster of every layer with the saccade events
    if not _raster(ax, first_spiking.directory, glimpse_ms, n_glimpses):
        _note(ax, "no spike recording (brian_spikes.npz layer<l>/t_s, layer<l>/i) in the spiking run")
    else:
        ax.set_title(f"spikes of the spiking run, seed {seeds[0]}, first {n_glimpses} glimpses", fontsize="medium")

    ax = axes["b"]                                    # soma and dendrite of one neuron, both continuous traces
    if all(k in mon for k in ("layer1/t_s", "layer1/v", "layer1/d")):
        ts = mon["layer1/t_s"]
        keep = ts < n_glimpses * glimpse_s
        v, d = mon["layer1/v"][keep], mon["layer1/d"][keep]
        ax.plot(ts[keep] * 1000, v, color="k", lw=1, label="soma v")
        ax.plot(ts[keep] * 1000, d, color=PALETTE[1], lw=1.5, label="dendrite d")
        ax.set(xlabel="time (ms)", ylabel="potential (rate units)", title="neuron 0 of layer 1 (spiking)")
        _legend_below(ax, ncols=2)
        ax.xaxis.label.set_visible(True)
    else:
        _note(ax, "no soma/dendrite recording\n(brian_monitors.npz layer1/v, layer1/d)")

    corr = {l: [] for l in w_layers}                  # weight changes of training, spiking vs rate, per layer
    shown = {l: None for l in w_layers}
    for k, (seed, rate, spiking, w0) in enumerate(pairs):
        finals = [(ckpt[1] if (ckpt := run.latest_checkpoint()) is not None else {}) for run in (rate, spiking)]
        for l in w_layers:
            dr, ds = (f.get(f"param/{l}/W") for f in finals)
            dr = None if dr is None else dr - w0[f"{l}/W"]
            ds = None if ds is None else ds - w0[f"{l}/W"]
            corr[l].append(correlation(dr, ds))
            if k == 0 and dr is not None and ds is not None and dr.shape == ds.shape:
                shown[l] = (dr.ravel(), ds.ravel())
    numbers["delta_w_correlation"] = {l: _stats(v) for l, v in corr.items()}
    lim = max([np.abs(np.r_[a, b]).max() for a, b in filter(None, shown.values())] + [1e-12])
    for j, ax in enumerate(dw_axes):
        l = w_layers[j] if j < len(w_layers) else None
        if l is None or shown[l] is None:
            _note(ax, "no final weights to compare")
            continue
        ax.scatter(*shown[l], s=3, alpha=0.35, color="0.15", rasterized=True)
        ax.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.8, ls="--")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel=f"ΔW rate (seed {seeds[0]})")
        ax.set_ylabel("ΔW spiking" if j == 0 else "")
        ax.set_title(f"weight change, layer {l}\nr = {_pm(numbers['delta_w_correlation'][l])} "
                     f"(n = {n} seeds)", fontsize="medium")
    if dw_axes and any(s is not None for s in shown.values()):
        dw_axes[-1].text(1.0, -0.25, "dashed: identity", transform=dw_axes[-1].transAxes, ha="right",
                         fontsize="small", color="0.3")

    ax = axes["d"]                                    # frozen-weight fidelity, with the rate-vs-rate ceiling
    measures = (("dw_correlation", "ΔW r", 0.98), ("gate_agreement", "gates", 0.95),
                ("norm_ratio", "norm\nratio", 1.0))
    fid = [s.get("fidelity") if isinstance(s.get("fidelity"), dict) else {} for s in sum_s]
    for part in ("frozen", "ceiling"):
        numbers[part] = {m: {l: _stats([((f.get(part) or {}).get(m) or {}).get(l) for f in fid]) for l in w_layers}
                         for m, _, _ in measures}
    if any(f.get("frozen") for f in fid):
        width = 0.8 / len(measures)
        top_y = 1.05
        ticks = []
        for j, (m, name, target) in enumerate(measures):
            xs = np.arange(len(w_layers)) + (j - 1) * width
            ticks += [(x, name) for x in xs]
            mean = np.array([numbers["frozen"][m][l]["mean"] for l in w_layers])
            sd = np.nan_to_num([numbers["frozen"][m][l]["sd"] for l in w_layers])
            ceil = np.array([numbers["ceiling"][m][l]["mean"] for l in w_layers])
            ax.bar(xs, mean, width * 0.92, yerr=_yerr(sd), color=SPIKING, edgecolor="0.2", lw=0.6, ecolor="0.2",
                   capsize=2, label="spiking vs rate rule" if j == 0 else None)
            ax.scatter(xs, ceil, marker="D", s=22, color=RATE, edgecolors="k", zorder=3,
                       label="rate vs rate, 1% input jitter (ceiling)" if j == 0 else None)
            if m == "norm_ratio":
                for x in xs:
                    ax.fill_between([x - width / 2, x + width / 2], 0.9, 1.1, color="0.5", alpha=0.25, lw=0,
                                    label="target band 0.9–1.1" if x == xs[0] else None)
            else:
                ax.hlines(np.full(len(xs), target), xs - width / 2, xs + width / 2, colors="k", linestyles="--", lw=0.8,
                          label="targets: r 0.98, gates 0.95" if j == 0 else None)
            top_y = max(top_y, np.nanmax(np.r_[mean + sd, ceil, 1.1]) * 1.05)
        ax.set(xticks=[x for x, _ in ticks], ylim=(0, top_y), ylabel="spiking vs rate rule")
        ax.set_xticklabels([t for _, t in ticks], fontsize="x-small")
        for i, l in enumerate(w_layers):
            ax.text(i, -0.13, f"layer {l}", transform=ax.get_xaxis_transform(), ha="center", va="top")
        ax.legend(fontsize="x-small", frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
        glimpses = [g for f in fid if np.isfinite(g := number(f.get("glimpses")))]
        epoch = f" ({np.mean(glimpses):.0f} glimpses)" if glimpses else ""
        ax.set_title(f"frozen-weight fidelity, one epoch{epoch}\n{sd_note}", fontsize="medium")
    else:
        _note(ax, "no run saved its frozen-weight fidelity\n(summary.json 'fidelity')")
        ax.set_title("frozen-weight fidelity", fontsize="medium")

    ax = axes["e"]                                    # CKA between the two representations, paired by sample
    feats = [(_load(rate, "features"), _load(spiking, "features")) for _, rate, spiking, _ in pairs]
    f_layers = sorted({k[len("layer"):] for fr, fs in feats for k in fr if re.fullmatch(r"layer\d+", k) and k in fs},
                      key=int)
    rows, shared, cka_notes = [], [], []             # per seed: rows of (rate, spiking) of one sample each
    for (seed, rate, spiking, _), (fr, fs) in zip(pairs, feats):
        ids_r, why_r = sample_ids(fr, rate.manifest.get("protocol") or {})
        ids_s, why_s = sample_ids(fs, spiking.manifest.get("protocol") or {})
        i = j = None
        if ids_r is None or ids_s is None:
            which, why = ("rate", why_r) if ids_r is None else ("spiking", why_s)
            note, n_shared = f"seed {seed}: CKA not given: the {which} run {why.removeprefix('it ')}", 0
        else:
            i, j, n_shared = pair_samples(ids_r, ids_s)
            note = "" if i is not None else (f"seed {seed}: CKA not given: the two runs share {n_shared} probed "
                                             f"samples (at least {MIN_SHARED} needed)")
        rows.append((i, j, ids_r, ids_s))
        shared.append(n_shared)
        cka_notes.append(note)
    cka = {}
    for l in f_layers:
        vals = []
        for (i, j, ids_r, ids_s), (fr, fs) in zip(rows, feats):
            a, b = fr.get(f"layer{l}"), fs.get(f"layer{l}")
            ok = i is not None and a is not None and b is not None and len(a) == len(ids_r) and len(b) == len(ids_s)
            vals.append(linear_cka(a[i], b[j]) if ok else np.nan)
        cka[l] = _stats(vals)
    numbers["cka"] = cka
    numbers["cka_samples"] = shared                  # samples both runs of each seed probed, in seed order
    numbers["cka_notes"] = cka_notes
    if f_layers:
        ax.bar(range(len(f_layers)), [cka[l]["mean"] for l in f_layers], 0.6, color="white", edgecolor="k", lw=1.2,
               yerr=_yerr([cka[l]["sd"] for l in f_layers]), ecolor="0.2", capsize=3)
        for i, l in enumerate(f_layers):
            ax.text(i, 0.03, f"{cka[l]['mean']:.2f}", ha="center", va="bottom", fontsize=9)
        ax.set(xticks=range(len(f_layers)), xticklabels=[f"layer {l}" for l in f_layers], ylim=(0, 1.05),
               xlim=(-0.6, len(f_layers) - 0.4), ylabel="linear CKA (rate, spiking)")
        if notes := [n for n in cka_notes if n]:
            ax.text(0.5, 0.97, "\n".join(notes), transform=ax.transAxes, ha="center", va="top", fontsize=6,
                    color="0.3", wrap=True)
    else:
        _note(ax, "no probe features (features.npz) in both runs")
    given = sorted({n for n, note in zip(shared, cka_notes) if not note})
    on = "" if not given else f", on {given[0]}{f'–{given[-1]}' if len(given) > 1 else ''} shared samples"
    ax.set_title(f"representational similarity{on}\n{sd_note}", fontsize="medium")

    ax = axes["f"]                                    # probe accuracy: trained and random, from spikes and as rates
    p_layers = sorted({l for s in sum_r + sum_s for l in s.get("probe", {})}, key=int)
    sources = (("rate", sum_r, "probe", RATE), ("spiking", sum_s, "probe", SPIKING),
               ("random (spikes)", sum_s, "probe_random", "0.45"),
               ("random (rates)", sum_s, "probe_random_rates", "0.8"))
    probe = {label: {l: _stats([(s.get(key) or {}).get(l) for s in ss]) for l in p_layers}
             for label, ss, key, _ in sources}
    numbers["probe"] = probe
    width = 0.8 / len(sources)
    for k, (label, _, _, colour) in enumerate(sources):
        xs = np.arange(len(p_layers)) + (k - (len(sources) - 1) / 2) * width
        ax.bar(xs, [probe[label][l]["mean"] for l in p_layers], width, color=colour, edgecolor="0.2", lw=0.6,
               label=label, yerr=_yerr([probe[label][l]["sd"] for l in p_layers]), ecolor="0.2", capsize=2)
    labels = next((f["labels"] for pair in feats for f in pair if "labels" in f), None)
    _accuracy_axis(ax, len(np.unique(labels)) if labels is not None and len(labels) else None)
    ax.set(xticks=range(len(p_layers)), xticklabels=[f"layer {l}" for l in p_layers])
    ax.set_title(f"probe\n{sd_note}", fontsize="medium")
    _legend_below(ax, ncols=3, fontsize="x-small")
    numbers["paired_tests"] = {
        l: {"spiking - rate": _paired_test(probe["spiking"][l]["values"], probe["rate"][l]["values"]),
            "spiking - random (rates)": _paired_test(probe["spiking"][l]["values"],
                                                     probe["random (rates)"][l]["values"])}
        for l in p_layers}

    ax = axes["g"]                                    # learning curves, mean ± SD over seeds
    epochs_seen = set()
    for label, group in (("rate", [p[1] for p in pairs]), ("spiking", [p[2] for p in pairs])):
        colour, marker = styles[label]
        rows = [read_metrics(run.directory) for run in group]
        for l in w_layers:
            curves = [[m["value"] for m in rs if m["stage"] == "train" and m["layer"] == int(l) and m["name"] == "loss"]
                      for rs in rows]
            length = min(map(len, curves))
            if not length:
                continue
            values = np.array([cv[:length] for cv in curves])
            epochs = np.arange(1, length + 1)
            epochs_seen.update(epochs.tolist())
            mean = values.mean(0)
            ax.plot(epochs, mean, LAYER_LINES[(int(l) - 1) % len(LAYER_LINES)], marker=marker, ms=4, color=colour,
                    label=f"{label}, layer {l}")
            if len(values) >= 2:
                sd = values.std(0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)
    if ax.lines:
        _epoch_axis(ax, epochs_seen)
        _legend_below(ax, ncols=2, fontsize="x-small")
    else:
        _note(ax, "no training losses (metrics.csv)")
    ax.set_ylabel("layer-local hinge loss")
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
