"""How faithfully the spiking network implements the rate rule: updates at frozen weights, side by side.

Both variants see the same glimpse stream from the same weights, and the weights do not move:

- the **rate rule** is evaluated in closed form (:func:`rate_updates`): with the weights frozen, the
  sum of the per-glimpse updates of the Brian2 rate network is ``-sum_k grad_k`` of the layer's hinge
  loss over the stream's (context, current) pairs, i.e. :func:`neuroplastic.rules.clapp_pairs` with
  unit row weights (the Brian2 rate network equals this reference glimpse by glimpse);
- the **spiking network** runs the stream with a learning rate so small (:data:`FROZEN_ETA`) that its
  weights do not measurably change, and its summed update is read back as ``(W_after - W_before) / eta``.

:func:`compare_updates` then gives, per layer, the correlation of the two summed updates of ``W``, the
ratio of their norms ``|dW_spiking| / |dW_rate|``, and the fraction of learning glimpses (``y != 0``) on
which the two hinge gates ``M = y Theta(1 - y u)`` agree (for CLAPP also the retrodiction pathway's gates
``M_retro = y Theta(1 - y u_retro)``). The same measures between the rate rule and itself with the input
jittered by 1 % (:func:`jitter_ceiling`) show how much of a gap any noise makes.
"""
from __future__ import annotations

import numpy as np

from ...rules import clapp_pairs, forward

__all__ = ["FROZEN_ETA", "JITTER", "compare_updates", "gates", "jitter_ceiling", "rate_updates"]

#: The learning rate of the frozen-weight spiking run: the weights move by about 1e-6 of their size.
FROZEN_ETA = 1e-7
#: Relative input jitter of the rate-vs-rate ceiling.
JITTER = 0.01


def rate_updates(params: dict, x: np.ndarray, y: np.ndarray,
                 layouts=None) -> tuple[dict, list[np.ndarray], list | None]:
    """The rate rule's updates summed over the stream ``(x, y)`` at frozen weights (``dW / eta``), u per layer,
    and (CLAPP, else None) the retrodiction score u_retro per layer.

    ``x`` is (length, n_in), ``y`` (length,) with 0 where nothing learns (the first glimpse, blank padding).
    The context of glimpse ``k`` is the layer's rate at glimpse ``k - 1``. ``layouts``: each layer's
    :class:`~neuroplastic.rules.retinotopic.Layout` (default dense); a retinotopic layer's scores are
    (length, locations).
    """
    updates, scores, retro = {}, [], []
    inp = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ones = np.ones(len(y))
    for l in range(1, sum(1 for k in params if k.endswith("/W")) + 1):
        p = {k[len(f"{l}/"):]: np.asarray(v, dtype=np.float64) for k, v in params.items() if k.startswith(f"{l}/")}
        prev = np.concatenate([np.zeros_like(inp[:1]), inp[:-1]])
        g = clapp_pairs(p["W"], p["W_pred"], inp, prev, y, W_retro=p.get("W_retro"), weights=ones,
                        layout=None if layouts is None else layouts[l - 1])
        updates[f"{l}/W"], updates[f"{l}/W_pred"] = -g.W, -g.W_pred
        if g.W_retro is not None:
            updates[f"{l}/W_retro"] = -g.W_retro
        scores.append(np.asarray(g.u))
        if g.u_retro is not None:
            retro.append(np.asarray(g.u_retro))
        inp = forward(p["W"], inp).z
    return updates, scores, retro or None


def gates(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The modulation factor ``M = y Theta(1 - y u)`` of every glimpse (and location, for u (length, locations))."""
    y = np.reshape(y, (-1,) + (1,) * (np.ndim(u) - 1))
    return y * (1 - y * u > 0)


def compare_updates(ref: tuple, other: tuple, y: np.ndarray, layouts=None) -> dict:
    """Per layer (``"1"``, ...): ``dw_correlation`` and ``norm_ratio`` (other / ref) of ``W``, ``gate_agreement``.

    ``ref`` and ``other`` are ``(updates, u)`` or ``(updates, u, u_retro)``; where both carry CLAPP's
    retrodiction scores, ``gate_agreement_retro`` compares the gates ``M_retro`` too. With retinotopic
    ``layouts``, ``W`` is compared on its connections only (the zeros off them would agree trivially)
    and the gates location by location.
    """
    (dw_ref, u_ref, *rest_ref), (dw, u, *rest) = ref, other
    retro_ref, retro = (rest_ref or [None])[0], (rest or [None])[0]
    learn = np.asarray(y) != 0
    out = {"dw_correlation": {}, "norm_ratio": {}, "gate_agreement": {}}
    for l, (ur, uo) in enumerate(zip(u_ref, u), start=1):
        a, b = np.asarray(dw_ref[f"{l}/W"]), np.asarray(dw[f"{l}/W"])
        if layouts is not None and not layouts[l - 1].is_dense:
            a, b = a[layouts[l - 1].ff_mask], b[layouts[l - 1].ff_mask]
        a, b = np.ravel(a), np.ravel(b)
        out["dw_correlation"][str(l)] = float(np.corrcoef(a, b)[0, 1])
        out["norm_ratio"][str(l)] = float(np.linalg.norm(b) / np.linalg.norm(a))
        out["gate_agreement"][str(l)] = float(np.mean(gates(ur, y)[learn] == gates(uo, y)[learn]))
    if retro_ref is not None and retro is not None:
        out["gate_agreement_retro"] = {str(l): float(np.mean(gates(ur, y)[learn] == gates(uo, y)[learn]))
                                       for l, (ur, uo) in enumerate(zip(retro_ref, retro), start=1)}
    return out


def jitter_ceiling(params: dict, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                   reference: tuple[dict, list] | None = None, layouts=None) -> dict:
    """:func:`compare_updates` of the rate rule against itself on the input jittered by :data:`JITTER` (relative)."""
    ref = reference if reference is not None else rate_updates(params, x, y, layouts)
    jittered = np.asarray(x) * (1 + JITTER * rng.standard_normal(np.shape(x)))
    return compare_updates(ref, rate_updates(params, jittered, y, layouts), y, layouts)
