"""The frozen-weight fidelity measures: the rate rule's summed updates and their comparison."""
import numpy as np
import pytest

from neuroplastic.engines.brian.fidelity import compare_updates, gates, jitter_ceiling, rate_updates
from neuroplastic.engines.numpy.clapp_stack import ClappStack
from neuroplastic.engines.numpy.stream import train_stream
from helpers import random_problem

SIZES = [10, 7, 5]


@pytest.mark.parametrize("rule", ["clapp_s", "clapp"])
def test_rate_updates_are_the_online_rule_summed_at_frozen_weights(rule):
    """Independent check: the online reference (one update per glimpse) with a learning rate so small that
    the weights do not move gives, divided by it, the closed-form sum; its scores are the same too."""
    params, x, y = random_problem(SIZES, 120, rule, seed=3, offset=0.5)
    y[60:70] = 0                                           # a blank stretch, as the spiking padding has
    updates, scores, retro = rate_updates(params, x, y)
    eta = 1e-9            # the weights drift by ~1e-7 (a 1e-7 relative effect); rounding adds ~1e-16 / eta each step
    net = ClappStack(SIZES, rule, {k: v.copy() for k, v in params.items()})
    train_stream(net, x, y, eta)
    for key, dw in updates.items():
        online = (net.params[key] - params[key]) / eta
        assert np.abs(dw).max() > 1e-3, key                 # not vacuous
        np.testing.assert_allclose(online, dw, rtol=0, atol=1e-4 * np.abs(dw).max() + 1e-5)
    frozen = train_stream(ClappStack(SIZES, rule, {k: v.copy() for k, v in params.items()}), x, y, 0.0)
    for l, u in enumerate(scores):
        learn = y != 0
        np.testing.assert_allclose(u[learn], frozen["u"][l][learn], rtol=1e-12, atol=1e-12)
        assert np.any(gates(u, y)[learn] != 0) and np.any(gates(u, y)[learn] == 0)
    assert (retro is None) == (rule == "clapp_s")
    if rule == "clapp":
        # CLAPP's retrodiction score, computed here directly: u_retro = c . (W_retro z), c = the rate one glimpse back
        inp = x
        for l, u_retro in enumerate(retro):
            W, W_retro = params[f"{l + 1}/W"], params[f"{l + 1}/W_retro"]
            z = np.maximum(inp @ W.T, 0)
            c = np.concatenate([np.maximum(np.zeros((1, W.shape[1])) @ W.T, 0), z[:-1]])
            np.testing.assert_allclose(u_retro, np.sum(c * (z @ W_retro.T), axis=1), rtol=1e-12, atol=1e-12)
            assert np.any(gates(u_retro, y) != gates(scores[l], y))       # the two pathways' gates differ
            inp = z


def test_compare_updates_measures():
    rng = np.random.default_rng(0)
    y = rng.choice([-1.0, 1.0], size=50)
    y[0] = 0
    a = {"1/W": rng.normal(size=(4, 3))}
    b = {"1/W": 2 * a["1/W"] + 0.1 * rng.normal(size=(4, 3))}
    u_a = rng.normal(size=50)
    u_b = u_a.copy()
    u_b[1:11] = -10 * y[1:11]                              # 10 of the 49 learning glimpses: gate flips to active
    flips = np.sum(gates(u_a, y)[1:11] != gates(u_b, y)[1:11])
    out = compare_updates((a, [u_a]), (b, [u_b]), y)
    assert out["dw_correlation"]["1"] == pytest.approx(np.corrcoef(a["1/W"].ravel(), b["1/W"].ravel())[0, 1])
    assert out["norm_ratio"]["1"] == pytest.approx(np.linalg.norm(b["1/W"]) / np.linalg.norm(a["1/W"]))
    assert out["gate_agreement"]["1"] == pytest.approx(1 - flips / 49)
    assert flips > 0
    assert "gate_agreement_retro" not in out
    # CLAPP: with retrodiction scores on both sides, their gates are compared too (the other measures unchanged).
    retro = compare_updates((a, [u_a], [u_a]), (b, [u_b], [u_b]), y)
    assert retro["gate_agreement_retro"]["1"] == pytest.approx(1 - flips / 49)
    assert {k: retro[k] for k in out} == out
    assert "gate_agreement_retro" not in compare_updates((a, [u_a], None), (b, [u_b], None), y)


def test_jitter_ceiling_is_high_but_not_perfect():
    params, x, y = random_problem(SIZES, 200, "clapp_s", seed=1, offset=0.5)
    out = jitter_ceiling(params, x, y, np.random.default_rng(0))
    for measure in ("dw_correlation", "gate_agreement"):
        for value in out[measure].values():
            assert 0.9 < value <= 1.0
    assert any(v < 1.0 for v in out["dw_correlation"].values())
