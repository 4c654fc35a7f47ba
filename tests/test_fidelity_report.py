"""Rate-vs-spiking reporting: `compare`'s weight-change and fidelity columns, and the multi-seed figure's numbers.

The runs are fake finished run directories with known weights, summaries and features, so every
number can be checked against an independent numpy/scipy computation.
"""
import csv
import io
import json
import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from neuroplastic.compare import FIELDS, compare_runs, format_table, write_csv
from neuroplastic.plots import rate_vs_spiking
from neuroplastic.results import Run

SIZES = (6, 4, 3)                                # input, layer 1, layer 2
MEASURES = ("dw_correlation", "gate_agreement", "norm_ratio")


def _initial(seed):
    rng = np.random.default_rng(seed)
    return {f"{l}/W": rng.standard_normal((SIZES[l], SIZES[l - 1])) for l in (1, 2)}


def _fake_run(root, name, *, seed, variant, w0, w1, summary, features=None, monitors=True):
    """A finished run directory as the engines leave it (only what compare and the figure read)."""
    directory = root / name
    directory.mkdir(parents=True)
    manifest = {"name": name, "seed": seed, "status": "finished", "elapsed_s": 2.5,
                "protocol": {"rule": {"name": "clapp_s"}, "engine": {"name": "brian", "variant": variant},
                             "model": {"layers": list(SIZES[1:])}, "stimulus": {"glimpse_ms": 20.0}}}
    run = Run(directory, manifest)
    run.save_checkpoint(0, {f"param/{k}": v for k, v in w0.items()}, {"epoch": 0})
    run.save_checkpoint(2, {f"param/{k}": v for k, v in w1.items()}, {"epoch": 2})
    run.write_metrics([dict(epoch=e, stage="train", layer=l, name="loss", value=1.0 / (e + l + seed))
                       for e in (1, 2) for l in (1, 2)])
    if features is not None:
        run.save_arrays("features", features)
    if monitors and variant == "spiking":
        t = np.arange(0, 0.1, 0.001)
        run.save_arrays("brian_monitors", {"layer1/t_s": t, "layer1/v": np.sin(40 * t), "layer1/d": np.cos(30 * t),
                                           "y": np.array([0, 1, -1, 1, 1, -1, -1, 1.0])})
        run.save_arrays("brian_spikes", {"layer1/t_s": np.array([0.001, 0.03, 0.05]), "layer1/i": np.array([0, 2, 1])})
    run.finish(summary)
    return Run.load(directory)


def _fidelity(rng):
    return {part: {m: {l: float(rng.uniform(0.5, 1.2)) for l in ("1", "2")} for m in MEASURES}
            for part in ("frozen", "ceiling")} | {"glimpses": 100}


def _pairs(tmp_path, seeds, *, fidelity=True, rates=True, same_start=True):
    """Paired rate and spiking runs, one pair per seed, with known weights, summaries and features."""
    runs = {"rate": [], "spiking": []}
    truth = {"dw": [], "summary": [], "features": []}
    labels = np.repeat(np.arange(4), 5)
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        w0 = _initial(seed)
        dw = {k: rng.standard_normal(v.shape) for k, v in w0.items()}
        dws = {k: 0.7 * v + 0.5 * rng.standard_normal(v.shape) for k, v in dw.items()}
        feats = {"rate": {"layer1": rng.standard_normal((20, 4)), "layer2": rng.standard_normal((20, 3)),
                          "labels": labels}}
        feats["spiking"] = {k: (v + 0.3 * rng.standard_normal(v.shape) if k != "labels" else v)
                            for k, v in feats["rate"].items()}
        s_rate = {"probe": {l: float(rng.uniform(0.6, 0.9)) for l in ("1", "2")},
                  "probe_random": {l: float(rng.uniform(0.3, 0.5)) for l in ("1", "2")}}
        s_spk = {"probe": {l: float(rng.uniform(0.6, 0.9)) for l in ("1", "2")},
                 "probe_random": {l: float(rng.uniform(0.2, 0.4)) for l in ("1", "2")}}
        if rates:
            s_spk["probe_rates"] = {l: float(rng.uniform(0.6, 0.9)) for l in ("1", "2")}
            s_spk["probe_random_rates"] = {l: float(rng.uniform(0.3, 0.5)) for l in ("1", "2")}
        if fidelity:
            s_spk["fidelity"] = _fidelity(rng)
        w0_spk = w0 if same_start else _initial(seed + 1000)
        runs["rate"].append(_fake_run(tmp_path, f"rate-{seed}", seed=seed, variant="rate", w0=w0,
                                      w1={k: w0[k] + dw[k] for k in w0}, summary=s_rate, features=feats["rate"]))
        runs["spiking"].append(_fake_run(tmp_path, f"spiking-{seed}", seed=seed, variant="spiking", w0=w0_spk,
                                         w1={k: w0_spk[k] + dws[k] for k in w0}, summary=s_spk,
                                         features=feats["spiking"]))
        truth["dw"].append((dw, dws))
        truth["summary"].append((s_rate, s_spk))
        truth["features"].append((feats["rate"], feats["spiking"]))
    return runs, truth


def _r(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def _hsic_cka(x, y):
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


# -- compare ------------------------------------------------------------------------------------------------


def test_compare_weight_change_correlation_and_fidelity_columns(tmp_path):
    runs, truth = _pairs(tmp_path, [2, 3])
    rate2, spk2, spk3 = runs["rate"][0], runs["spiking"][0], runs["spiking"][1]
    rows = compare_runs([rate2, spk2, spk3])
    by = {(r["run"], r["layer"]): r for r in rows}
    (dw2, dws2), _ = truth["dw"]
    for l in (1, 2):
        key = f"{l}/W"
        assert by["rate-2", l]["dw_correlation"] == pytest.approx(1.0)
        assert by["spiking-2", l]["dw_correlation"] == pytest.approx(_r(dws2[key], dw2[key]), rel=1e-12)
        assert math.isnan(by["spiking-3", l]["dw_correlation"])          # another seed: another start
        s_spk = truth["summary"][0][1]
        r = by["spiking-2", l]
        assert r["probe_rates"] == s_spk["probe_rates"][str(l)]
        assert r["probe_random_rates"] == s_spk["probe_random_rates"][str(l)]
        assert r["fidelity_dw"] == s_spk["fidelity"]["frozen"]["dw_correlation"][str(l)]
        assert r["fidelity_gates"] == s_spk["fidelity"]["frozen"]["gate_agreement"][str(l)]
        assert r["fidelity_norm"] == s_spk["fidelity"]["frozen"]["norm_ratio"][str(l)]
        assert r["ceiling_dw"] == s_spk["fidelity"]["ceiling"]["dw_correlation"][str(l)]
        rate_row = by["rate-2", l]                                         # a rate run saved none of these
        assert all(math.isnan(rate_row[k]) for k in ("probe_rates", "probe_random_rates", "fidelity_dw",
                                                      "fidelity_gates", "fidelity_norm", "ceiling_norm"))
    table = format_table(rows)
    assert "ΔW r" in table and "frozen-weight fidelity (spiking vs rate rule; ceiling: rate vs rate" in table
    fidelity_part = table.split("frozen-weight fidelity")[1]           # runs are labelled by what sets them apart
    assert "engine.variant=spiking seed=2" in fidelity_part
    assert "engine.variant=rate" not in fidelity_part
    write_csv(rows, tmp_path / "cmp.csv")
    with open(tmp_path / "cmp.csv") as fh:
        read = list(csv.DictReader(fh))
    assert tuple(read[0]) == FIELDS
    assert float(read[2]["dw_correlation"]) == pytest.approx(by["spiking-2", 1]["dw_correlation"])


def test_compare_without_initial_weights_or_new_keys_is_nan_and_has_no_fidelity_table(tmp_path):
    runs, _ = _pairs(tmp_path, [2], fidelity=False, rates=False)
    rate, spiking = runs["rate"][0], runs["spiking"][0]
    (spiking.directory / "checkpoints" / "epoch_0000.npz").unlink()      # an older run: no initial state
    rows = compare_runs([rate, spiking])
    spk = [r for r in rows if r["run"] == "spiking-2"]
    assert spk and all(math.isnan(r[k]) for r in spk for k in ("dw_correlation", "probe_rates",
                                                                "probe_random_rates", "fidelity_dw"))
    table = format_table(rows)
    assert "ΔW r" in table and "frozen-weight fidelity" not in table


# -- the rate-vs-spiking figure -----------------------------------------------------------------------------


def _sd(values):
    return float(np.std(values, ddof=1))


def test_figure_numbers_match_independent_computations(tmp_path):
    seeds = [2, 3, 4]
    runs, truth = _pairs(tmp_path, seeds)
    fig, numbers = rate_vs_spiking({"spiking": runs["spiking"], "rate": runs["rate"][::-1]}, title="t")
    fig.savefig(io.BytesIO(), format="png")
    assert numbers["seeds"] == seeds
    for l in ("1", "2"):
        r = [_r(dws[f"{l}/W"], dw[f"{l}/W"]) for dw, dws in truth["dw"]]
        got = numbers["delta_w_correlation"][l]
        assert got["values"] == pytest.approx(r, rel=1e-12)
        assert (got["mean"], got["sd"]) == pytest.approx((np.mean(r), _sd(r)), rel=1e-12)
        for part in ("frozen", "ceiling"):
            for m in MEASURES:
                v = [s["fidelity"][part][m][l] for _, s in truth["summary"]]
                assert (numbers[part][m][l]["mean"], numbers[part][m][l]["sd"]) == pytest.approx(
                    (np.mean(v), _sd(v)), rel=1e-12)
        cka = [_hsic_cka(fr[f"layer{l}"], fs[f"layer{l}"]) for fr, fs in truth["features"]]
        assert (numbers["cka"][l]["mean"], numbers["cka"][l]["sd"]) == pytest.approx((np.mean(cka), _sd(cka)),
                                                                                      rel=1e-9)
        probe = {"rate": [sr["probe"][l] for sr, _ in truth["summary"]],
                 "spiking": [ss["probe"][l] for _, ss in truth["summary"]],
                 "random (spikes)": [ss["probe_random"][l] for _, ss in truth["summary"]],
                 "random (rates)": [ss["probe_random_rates"][l] for _, ss in truth["summary"]]}
        for label, v in probe.items():
            got = numbers["probe"][label][l]
            assert got["values"] == v and (got["mean"], got["sd"]) == pytest.approx((np.mean(v), _sd(v)), rel=1e-12)
        for name, other in (("spiking - rate", "rate"), ("spiking - random (rates)", "random (rates)")):
            test = ttest_rel(probe["spiking"], probe[other])
            got = numbers["paired_tests"][l][name]
            assert got["mean_diff"] == pytest.approx(np.mean(np.subtract(probe["spiking"], probe[other])), rel=1e-12)
            assert (got["t"], got["p"]) == pytest.approx((test.statistic, test.pvalue), rel=1e-9)
    saved = json.loads(json.dumps(numbers))                                # what build_figure writes
    assert saved["seeds"] == seeds


def test_figure_of_older_runs_and_one_seed_leaves_nan_and_notes(tmp_path):
    runs, _ = _pairs(tmp_path, [2], fidelity=False, rates=False)
    for name in ("brian_monitors.npz", "brian_spikes.npz"):
        (runs["spiking"][0].directory / name).unlink()
    fig, numbers = rate_vs_spiking(runs)
    fig.savefig(io.BytesIO(), format="png")
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "no run saved its frozen-weight fidelity" in texts and "no spike recording" in texts
    assert math.isnan(numbers["frozen"]["dw_correlation"]["1"]["mean"])
    assert math.isnan(numbers["probe"]["random (rates)"]["1"]["mean"])
    assert math.isnan(numbers["delta_w_correlation"]["1"]["sd"])          # one seed: no SD
    assert all(math.isnan(v) for v in (numbers["paired_tests"]["1"]["spiking - rate"]["t"],
                                       numbers["paired_tests"]["1"]["spiking - rate"]["p"]))


def test_figure_refuses_unpaired_seeds_and_different_starts(tmp_path):
    runs, _ = _pairs(tmp_path / "a", [2, 3])
    with pytest.raises(ValueError, match="same seeds"):
        rate_vs_spiking({"rate": runs["rate"][:1], "spiking": runs["spiking"]})
    with pytest.raises(ValueError, match="'rate' and 'spiking'"):
        rate_vs_spiking({"rate": runs["rate"]})
    other, _ = _pairs(tmp_path / "b", [2], same_start=False)
    with pytest.raises(ValueError, match="seed 2: .* same initial weights"):
        rate_vs_spiking(other)
