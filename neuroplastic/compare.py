"""Compare finished runs side by side, from what they saved: nothing is recomputed.

For every run: per-layer linear-probe accuracy (trained and random encoder; for a spiking run also
both encoders read out as rates, ``probe_rates`` / ``probe_random_rates``), final training loss per
layer and wall time. Against the first run (the reference): cosine similarity of each layer's
feed-forward weights ``W``, linear CKA of each layer's probe features (the glimpse-pooled
representations of the same samples, saved by the engines in ``features.npz``) and, when the two runs
started from the same weights, the correlation of their weight changes ``dW = W_final - W_initial``
(``dw_correlation``): whether two simulations of one rule from one start learned the same thing.

A spiking run of the Brian2 engine also saved its frozen-weight fidelity to the rate rule (its summed
updates over one epoch at the trained weights against the rate rule's): ``fidelity_dw`` (correlation),
``fidelity_gates`` (fraction of agreeing hinge gates) and ``fidelity_norm`` (norm ratio), with the
rate rule's own values under 1 % input jitter as ``ceiling_*``. Whatever a run did not save is NaN.

Linear CKA (Kornblith et al. 2019) compares two representations ``X`` (n, p) and ``Y`` (n, q) of the
same n samples, invariant to rotations and isotropic scaling::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),   Xc, Yc column-centred

**Paired by sample.** Two runs with ``[data] max_samples`` keep different random subsets when their
seeds differ, so row i of one run's features is not row i of the other's. Every run saves which
sample of the data source each row is (``sample_ids`` in ``features.npz``); CKA is computed on the
samples both runs probed, in one order (:func:`~neuroplastic.evaluate.similarity.pair_samples`, as
the figures pair them). With fewer than :data:`MIN_SHARED` shared samples, or for a run that saved no
ids (made before they were saved) and probed a ``max_samples`` subset, CKA is NaN and the table says
why (``cka_note``); a run that probed its data whole needs no saved ids, its rows are the samples in order.

**Which runs, in which order** (:func:`expand_runs`): run directories and sweep directories in the order
given, or names within the results store (a run directory's name, or a protocol name for all its
runs) whose runs come sorted by protocol name, seed, then creation date (:mod:`neuroplastic.catalog`);
``--where`` filters keep the runs that pass them all. The first run is the reference. Each run is
labelled by the settings in which the compared runs differ (``seed=2 rule.name=clapp``).

Runs are comparable when they share the architecture and the data (the keys in
:data:`SAME_KEYS`); otherwise :func:`check_comparable` says which keys differ.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Entry, check_filters, parse_where, scan, settings, sort_key, unique_labels
from .evaluate import correlation, linear_cka
from .evaluate.similarity import MIN_SHARED, pair_samples, paired_rows, sample_ids
from .protocol import SCHEMA
from .errors import RunError
from .results import Run, atomic_write, number, read_metrics

__all__ = ["MIN_SHARED", "SAME_KEYS", "check_comparable", "compare_runs", "comparison_figure", "expand_runs",
           "format_table", "linear_cka", "paired_rows", "write_csv"]

#: Protocol keys two runs must share to be compared (architecture and data).
SAME_KEYS = ("model.arch", "model.layers", "data.source", "data.path", "data.split", "data.label", "data.colour",
             "data.max_samples", "data.test_fraction", "stimulus.patch", "stimulus.stride", "stimulus.crop",
             "evaluate.source", "evaluate.path", "evaluate.split", "evaluate.test_split")


def expand_runs(paths, store: str | Path = "runs", where=()) -> list[Run]:
    """The runs to compare; the first is the reference.

    Each of ``paths`` is a run directory, a sweep directory (``points.json``: all its runs) or, when
    no such directory exists, a name within the results store ``store``: a run directory's name, or a
    protocol name for all the runs of that protocol, sorted by seed then creation date
    (:func:`neuroplastic.catalog.sort_key`). With no paths but filters, every run of the store is a
    candidate. ``where`` (``["seed=1..3", "rule.name=clapp"]``) keeps the runs that pass every filter.
    """
    filters = parse_where(where)
    chosen: list[Entry] = []
    store_entries: list[Entry] | None = None
    for arg in (paths if paths or not filters else [None]):
        p = Path(arg) if arg is not None else None
        if p is not None and (p.is_dir() or p.parent != Path(".") or p.name in ("", ".", "..")):
            points = p / "points.json"
            if points.is_file():
                for point in json.loads(points.read_text()):
                    d = Path(point["run"])
                    run = Run.load(d if d.is_absolute() else p.parent / d)
                    chosen.append(Entry(run.directory, run.manifest))
            else:
                run = Run.load(p)
                chosen.append(Entry(run.directory, run.manifest))
            continue
        if store_entries is None:
            store_entries = scan(store)
        if arg is None:
            chosen += sorted((e for e in store_entries if e.manifest is not None), key=sort_key)
            continue
        named = [e for e in store_entries if arg in (e.name, e.protocol_name)]
        if not named:
            protocols = sorted({e.protocol_name for e in store_entries if e.manifest is not None})
            raise RunError(f"{arg}: no such run directory, and no run named so in the results store {store} "
                           f"(a run directory's name or a protocol name; protocols there: "
                           f"{', '.join(protocols) or 'none'})")
        if broken := [e for e in named if e.manifest is None and e.name == arg]:
            raise RunError(f"{broken[0].directory}: {broken[0].problem}")
        chosen += sorted((e for e in named if e.manifest is not None), key=sort_key)
    if not chosen:
        raise RunError("no runs to compare")
    check_filters(filters, chosen + (store_entries or []))
    kept = [e for e in chosen if all(f.matches(settings(e.manifest)) for f in filters)]
    if not kept:
        raise RunError(f"no runs to compare: none of the {len(chosen)} selected runs passes "
                       + " ".join(f"--where {f.key}={f.text}" for f in filters))
    return [e.run() for e in kept]


def _get(protocol: dict[str, Any], dotted: str):
    """A resolved protocol's value of ``table.key``; a run made before the key existed had its default."""
    table, key = dotted.split(".")
    values = protocol.get(table, {})
    if key not in values and key in SCHEMA.get(table, {}):
        return SCHEMA[table][key].default
    return values.get(key)


def check_comparable(runs: list[Run]) -> list[str]:
    """What keeps ``runs`` from being compared: unfinished runs and differing :data:`SAME_KEYS`."""
    problems = [f"{r.directory}: status is {r.manifest.get('status')!r}, not 'finished'"
                for r in runs if r.manifest.get("status") != "finished"]
    for key in SAME_KEYS:
        values = {json.dumps(_get(r.manifest["protocol"], key)) for r in runs}
        if len(values) > 1:
            problems.append(f"[{key.split('.')[0]}] {key.split('.')[1]} differs: "
                            + ", ".join(f"{r.directory.name} = {json.dumps(_get(r.manifest['protocol'], key))}"
                                        for r in runs))
    return problems


def _final_weights(run: Run) -> dict[str, np.ndarray]:
    ckpt = run.latest_checkpoint()
    return {} if ckpt is None else {k[len("param/"):]: v for k, v in ckpt[1].items() if k.startswith("param/")}


def _features(run: Run) -> dict[str, np.ndarray]:
    path = run.directory / "features.npz"
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _initial_weights(run: Run) -> dict[str, np.ndarray]:
    try:
        return run.initial_params()
    except RunError:                      # no epoch-0 checkpoint: the weight changes are unknown
        return {}


def _delta_w(run: Run, final: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(initial weights, final - initial)`` for the keys both checkpoints hold with one shape."""
    initial = _initial_weights(run)
    return initial, {k: final[k] - v for k, v in initial.items() if k in final and np.shape(final[k]) == np.shape(v)}


def _fidelity(summary: dict[str, Any], part: str, measure: str, layer: int) -> float:
    """One number of ``summary["fidelity"][part][measure][layer]``, NaN when the run did not save it."""
    fid = summary.get("fidelity")
    table = fid.get(part) if isinstance(fid, dict) else None
    values = table.get(measure) if isinstance(table, dict) else None
    return number(values.get(str(layer))) if isinstance(values, dict) else float("nan")


def _pairing(run: Run, feats, ref_ids, ref_why: str) -> tuple[np.ndarray | None, np.ndarray | None, int, str]:
    """``(rows of run, rows of the reference, shared samples, note)``; rows are ``None`` when CKA cannot be given."""
    ids, why = sample_ids(feats, run.manifest.get("protocol") or {})
    if ids is None:
        return None, None, 0, f"CKA not given: {why}"
    if ref_ids is None:
        return None, None, 0, f"CKA not given: the reference run {ref_why.removeprefix('it ')}"
    i, j, shared = pair_samples(ids, ref_ids)
    if i is None:
        return None, None, shared, (f"CKA not given: it shares {shared} probed samples with the reference "
                                    f"(at least {MIN_SHARED} needed)")
    note = "" if shared == len(ids) == len(ref_ids) else \
        f"CKA on the {shared} samples it shares with the reference (of {len(ids)} and {len(ref_ids)})"
    return i, j, shared, note


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare_runs(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run and layer: probe accuracies, final loss, fidelity, and similarity to the first run."""
    ref_w, ref_f = _final_weights(runs[0]), _features(runs[0])
    ref_w0, ref_dw = _delta_w(runs[0], ref_w)
    ref_ids, ref_why = sample_ids(ref_f, runs[0].manifest.get("protocol") or {})
    names = unique_labels([r.directory.name for r in runs], [r.manifest for r in runs])
    rows = []
    for run, label in zip(runs, names):
        summary = run.summary()
        metrics = read_metrics(run.directory)
        last = max((m["epoch"] for m in metrics if m["stage"] == "train"), default=None)
        loss = {m["layer"]: m["value"] for m in metrics
                if m["stage"] == "train" and m["name"] == "loss" and m["epoch"] == last}
        weights, feats = _final_weights(run), _features(run)
        w0, dw = _delta_w(run, weights)
        mine, theirs, shared, note = _pairing(run, feats, ref_ids, ref_why)
        p = run.manifest["protocol"]
        for layer in sorted(map(int, summary.get("probe", {})), key=int):
            key = f"{layer}/W"
            fkey = f"layer{layer}"
            same_w = key in weights and key in ref_w and weights[key].shape == ref_w[key].shape
            same_f = fkey in feats and fkey in ref_f and mine is not None
            same_start = (key in dw and key in ref_dw and np.shape(w0[key]) == np.shape(ref_w0[key])
                          and np.array_equal(w0[key], ref_w0[key]))
            rows.append({
                "run": run.directory.name, "label": label, "rule": _get(p, "rule.name"), "engine": _get(p, "engine.name"),
                "variant": _get(p, "engine.variant"), "seed": run.manifest.get("seed"), "layer": layer,
                "probe": summary["probe"][str(layer)],
                "probe_random": summary.get("probe_random", {}).get(str(layer), float("nan")),
                "final_loss": loss.get(layer, float("nan")),
                "weight_cosine": _cosine(weights[key], ref_w[key]) if same_w else float("nan"),
                "cka": linear_cka(feats[fkey][mine], ref_f[fkey][theirs]) if same_f else float("nan"),
                "cka_samples": shared, "cka_note": note,
                "dw_correlation": correlation(dw[key], ref_dw[key]) if same_start else float("nan"),
                "probe_rates": number(summary.get("probe_rates", {}).get(str(layer))),
                "probe_random_rates": number(summary.get("probe_random_rates", {}).get(str(layer))),
                **{f"{prefix}_{short}": _fidelity(summary, part, measure, layer)
                   for prefix, part in (("fidelity", "frozen"), ("ceiling", "ceiling"))
                   for short, measure in (("dw", "dw_correlation"), ("gates", "gate_agreement"),
                                          ("norm", "norm_ratio"))},
                "wall_s": run.manifest.get("elapsed_s", float("nan")),
            })
    return rows


FIELDS = ("run", "label", "rule", "engine", "variant", "seed", "layer", "probe", "probe_random", "final_loss",
          "weight_cosine", "cka", "cka_samples", "cka_note", "wall_s", "dw_correlation", "probe_rates", "probe_random_rates", "fidelity_dw",
          "fidelity_gates", "fidelity_norm", "ceiling_dw", "ceiling_gates", "ceiling_norm")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a terminal table (similarities are to the first run), the notes on its CKA, and the
    spiking runs' fidelity. Runs are named by their labels (the settings in which they differ)."""
    nan = float("nan")
    name = lambda r: r.get("label") or r["run"]
    w = max([3] + [len(name(r)) for r in rows])
    head = (f"{'run':<{w}} {'layer':>5} {'probe':>6} {'random':>6} {'loss':>7} {'W cos':>6} {'CKA':>5} {'ΔW r':>6} "
            f"{'wall s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{name(r):<{w}} {r['layer']:>5} {r['probe']:6.3f} {r['probe_random']:6.3f} "
                     f"{r['final_loss']:7.4f} {r['weight_cosine']:6.3f} {r['cka']:5.3f} "
                     f"{r.get('dw_correlation', nan):6.3f} {r['wall_s']:7.1f}")
    if rows:
        lines.append(f"(W cos, CKA and ΔW r are measured against the first run, {name(rows[0])})")
    notes = dict.fromkeys(f"note: {name(r)}: {r['cka_note']}" for r in rows if r.get("cka_note"))
    lines += list(notes)
    fidelity = [r for r in rows if any(np.isfinite(r.get(f"fidelity_{k}", nan)) for k in ("dw", "gates", "norm"))]
    if fidelity:
        head = (f"{'run':<{w}} {'layer':>5} {'ΔW r':>6} {'(ceil)':>6} {'gates':>6} {'(ceil)':>6} {'norm':>6} "
                f"{'(ceil)':>6} {'random as rates':>15}")
        lines += ["", "frozen-weight fidelity (spiking vs rate rule; ceiling: rate vs rate with 1% input jitter)",
                  head, "-" * len(head)]
        for r in fidelity:
            lines.append(f"{name(r):<{w}} {r['layer']:>5} {r['fidelity_dw']:6.3f} {r['ceiling_dw']:6.3f} "
                         f"{r['fidelity_gates']:6.3f} {r['ceiling_gates']:6.3f} {r['fidelity_norm']:6.3f} "
                         f"{r['ceiling_norm']:6.3f} {r['probe_random_rates']:15.3f}")
    return "\n".join(lines)


def comparison_figure(rows: list[dict[str, Any]]):
    """Probe accuracy per layer for every run (random encoder dashed) and CKA to the first run."""
    import matplotlib.pyplot as plt

    from .plots import PALETTE

    runs = list(dict.fromkeys(r["run"] for r in rows))
    label = {r["run"]: r.get("label") or r["run"] for r in rows}
    layers = sorted({r["layer"] for r in rows})
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    width = 0.8 / len(runs)
    for k, name in enumerate(runs):
        mine = {r["layer"]: r for r in rows if r["run"] == name}
        x = np.array(layers) + (k - (len(runs) - 1) / 2) * width
        colour = PALETTE[k % len(PALETTE)]
        ax.bar(x, [mine[l]["probe"] if l in mine else np.nan for l in layers], width, color=colour, label=label[name])
        ax.scatter(x, [mine[l]["probe_random"] if l in mine else np.nan for l in layers], marker="_", s=200,
                   color="k", zorder=3)
        bx.plot(layers, [mine[l]["cka"] if l in mine else np.nan for l in layers], "o-", color=colour)
    ax.set(xlabel="layer", ylabel="linear-probe accuracy", xticks=layers,
           title="probe accuracy (black bars: random encoder)")
    ax.legend(fontsize="x-small", loc="lower right")
    bx.set(xlabel="layer", ylabel="linear CKA to first run", xticks=layers, ylim=(0, 1.05),
           title=f"representation similarity to {label[runs[0]]}" if runs and len(label[runs[0]]) <= 30
           else "representation similarity")
    return fig
