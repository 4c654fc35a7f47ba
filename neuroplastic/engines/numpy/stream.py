"""Online CLAPP on a glimpse stream: one update per glimpse, plain SGD — the numpy reference of the Brian2 engine.

At glimpse ``k`` every layer computes its rate from the current weights; the
context is the layer's rate *as it was* during glimpse ``k - 1`` (latched at the
end of that glimpse, i.e. computed with the weights of that time), exactly what
a neuron that stores its last rate in a dendritic trace sees. Then every layer
applies ``-lr`` times the gradient of :func:`neuroplastic.rules.clapp_pairs` for
the single pair (context, current) with label ``y[k]``; ``y[k] = 0`` (the first
glimpse) updates nothing. All updates of a glimpse use the values from before
any of them.
"""
from __future__ import annotations

import numpy as np

from ...rules import LayerForward, clapp_pairs, forward
from .clapp_stack import ClappStack

__all__ = ["train_stream"]


def train_stream(net: ClappStack, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, np.ndarray]:
    """Train ``net`` in place on inputs ``x`` (length, n_in) with labels ``y`` (length,).

    Returns the per-glimpse score ``u`` and modulation factor ``gamma`` of every
    layer, as arrays (n_layers, length), for comparison with the Brian2 monitors;
    for CLAPP also the retrodiction pathway's ``u_retro`` and ``gamma_retro``. With
    retinotopic layers (``net.layouts``), one array (length, locations) per layer.
    """
    n_layers = net.n_layers
    u, gamma, u_r, gamma_r = ([np.zeros((len(x), lay.locations)) for lay in net.layouts] for _ in range(4))
    latched: list[LayerForward | None] = [None] * n_layers     # each layer's soma one glimpse back
    inputs_prev = [None] * n_layers
    for k in range(len(x)):
        inp = x[k][None, :]
        now = []
        for l in range(n_layers):
            now.append((inp, forward(net.params[f"{l + 1}/W"], inp)))
            inp = now[-1][1].z
        if y[k] != 0:
            updates = {}
            for l, (inp_l, cur) in enumerate(now):
                p = f"{l + 1}/"
                g = clapp_pairs(net.params[p + "W"], net.params[p + "W_pred"], inp_l, inputs_prev[l],
                                np.array([y[k]], dtype=inp_l.dtype), cur=cur, prev=latched[l],
                                W_retro=net.params.get(p + "W_retro"), layout=net.layouts[l])
                u[l][k], gamma[l][k] = g.u[0], g.gamma[0]
                updates[p + "W"], updates[p + "W_pred"] = g.W, g.W_pred
                if g.W_retro is not None:
                    updates[p + "W_retro"] = g.W_retro
                    u_r[l][k], gamma_r[l][k] = g.u_retro[0], g.gamma_retro[0]
            for key, grad in updates.items():
                net.params[key] -= lr * grad
        for l, (inp_l, cur) in enumerate(now):
            latched[l], inputs_prev[l] = cur, inp_l

    def joined(per_layer):          # dense: (n_layers, length); retinotopic: per layer (length, locations)
        return np.stack([v[:, 0] for v in per_layer]) if all(v.shape[1] == 1 for v in per_layer) else per_layer

    out = {"u": joined(u), "gamma": joined(gamma)}
    if net.rule.retro:
        out.update(u_retro=joined(u_r), gamma_retro=joined(gamma_r))
    return out
