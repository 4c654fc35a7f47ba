r"""How the hinge-loss error reaches each weight: end-to-end, layer-wise, or by target propagation.

Every function takes the parameter dict of :class:`~neuroplastic.rules.hinge_dense.ViewEncoder`
and two views ``x1, x2`` of the same images, and returns the hinge result and the
*gradients* (or, for FA, RF and DTP, the pseudo-gradients) of the parameters it
trains; an optimiser applies them. View 1 only provides the targets
(:func:`~neuroplastic.rules.hinge.hinge_views` blocks its gradient), so every
backward pass below runs on view 2. ``G = dL/de2`` is the hinge gradient at the head.

End-to-end (``e2e_grads``), for layers ``l = L, ..., 1`` with ``delta_h_L = G F_H``:

.. math::

    \frac{\partial L}{\partial H} = G^\top h_L,\qquad
    \delta_l = \delta h_l \odot \phi'(a_l),\qquad
    \frac{\partial L}{\partial W_l} = \delta_l^\top h_{l-1},\qquad
    \delta h_{l-1} = \delta_l F_l

BP: ``F_H = H``, ``F_l = W_l`` (the exact gradient). FA: ``F_H = B_H``,
``F_l = B_l``, fixed random matrices (Lillicrap et al. 2016).

Layer-wise (``layer_grads``): layer ``l`` and its head ``H_l`` see ``h_{l-1}``
as data (frozen layers below, nothing above): the same equations with ``L = l``
and one layer, through ``F_H = H_l`` (BP), a fixed random ``B_l`` (RF) or an
updated random ``B_l`` (URF) whose update is the head's own,
``dB_l = G^T h_l`` (the authors' ``grad_weight_fb = grad_weight``), so that
``B_l - H_l`` stays what it was at the start and ``B_l`` aligns with ``H_l`` as ``H_l`` grows.

Difference target propagation (``dtp_grads``): the head learns from ``G`` as
above; the layers learn from targets

.. math::

    \hat h_L = h_L - \alpha\, \frac{\partial \ell_i}{\partial h_L},\qquad
    \hat h_{l-1} = h_{l-1} - g_l(h_l) + g_l(\hat h_l),\qquad
    L_l = \frac{1}{N}\sum_i \|h_l - \hat h_l\|^2

(``ell_i = N L`` restricted to image ``i``: its own hinge terms, so ``alpha`` does
not depend on the batch size), and each inverse ``g_l(h) = phi(V_l h + c_l)``
learns to undo layer ``l`` on noisy inputs,

.. math::

    \tilde h = h_{l-1} + \sigma\varepsilon,\qquad
    L^{inv}_l = \frac{1}{M}\sum_i \| g_l(f_l(\tilde h)) - \tilde h \|^2 .

Targets are constants for the layer losses, so no error crosses a layer.

Parameters, views and gradients are arrays of one namespace and device (numpy, torch, CuPy); losses
and fractions come back as 0-d float64 arrays of it (read once per batch: see
:class:`~neuroplastic.rules.hinge.HingeResult`).
"""
from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .hinge import HingeResult, hinge_views
from .hinge_layers import ACTIVATIONS, forward

__all__ = ["HingeSettings", "DTPResult", "e2e_grads", "layer_grads", "dtp_targets", "inverse_grads", "dtp_grads"]


class HingeSettings(NamedTuple):
    """``tau``, ``delta``, ``negatives`` and ``negative_weight`` of :func:`~neuroplastic.rules.hinge.hinge_views`."""

    tau: float = 2.0
    delta: float = 1.0
    negatives: int | None = None
    negative_weight: float = 0.0


def _hinge(e1, e2, hinge: HingeSettings) -> HingeResult:
    return hinge_views(e1, e2, hinge.tau, hinge.delta, hinge.negatives, hinge.negative_weight)


def e2e_grads(params: dict, activation: str, x1, x2, hinge: HingeSettings, feedback: str = "bp"):
    """End-to-end BP (``feedback="bp"``) or feedback alignment (``"fa"``) through every layer.

    Returns ``(HingeResult, grads)`` with gradients for every ``W`` and the top head ``H``.
    """
    phi_prime = ACTIVATIONS[activation][1]
    L = sum(1 for k in params if k.endswith("/W"))
    top = f"{L}/"
    h1 = forward(params, x1, activation, L)[1]
    a2, h2 = forward(params, x2, activation, L)
    res = _hinge(h1[L] @ params[top + "H"].T, h2[L] @ params[top + "H"].T, hinge)
    G = res.grad
    grads = {top + "H": G.T @ h2[L]}
    dh = G @ params[top + ("H" if feedback == "bp" else "B_H")]
    for l in range(L - 1, -1, -1):
        delta = dh * phi_prime(a2[l])
        grads[f"{l + 1}/W"] = delta.T @ h2[l]
        if l > 0:
            dh = delta @ params[f"{l + 1}/" + ("W" if feedback == "bp" else "B")]
    return res, grads


def layer_grads(params: dict, activation: str, l: int, x1, x2, hinge: HingeSettings, feedback: str = "bp"):
    """Layer ``l`` (0-based) learning from its own head; ``x1, x2`` are its inputs ``h_{l-1}`` (data).

    ``feedback``: ``"bp"`` (through ``H_l``), ``"rf"`` (fixed ``B_H``) or ``"urf"`` (``B_H``, which
    also gets the head's gradient). Returns ``(HingeResult, grads)``.
    """
    phi, phi_prime = ACTIVATIONS[activation]
    p = f"{l + 1}/"
    W, H = params[p + "W"], params[p + "H"]
    a2 = x2 @ W.T
    h2 = phi(a2)
    res = _hinge(phi(x1 @ W.T) @ H.T, h2 @ H.T, hinge)
    G = res.grad
    grads = {p + "H": G.T @ h2}
    delta = (G @ (H if feedback == "bp" else params[p + "B_H"])) * phi_prime(a2)
    grads[p + "W"] = delta.T @ x2
    if feedback == "urf":
        grads[p + "B_H"] = array_namespace(G).asarray(grads[p + "H"], copy=True)
    return res, grads


def _inverse(params: dict, l: int, h, phi):
    """``g_l(h) = phi(V_l h + c_l)``: drive and output of layer ``l``'s (0-based) inverse."""
    u = h @ params[f"{l + 1}/V"].T + params[f"{l + 1}/c"]
    return u, phi(u)


def dtp_targets(params: dict, activation: str, h: list, top_target):
    """Targets ``[hat h_1, ..., hat h_L]`` from rates ``h = [x, h_1, ..., h_L]`` and ``hat h_L``.

    ``hat h_{l-1} = h_{l-1} - g_l(h_l) + g_l(hat h_l)``: the difference correction makes
    ``hat h_{l-1} = h_{l-1}`` exactly when ``hat h_l = h_l``, however imperfect ``g_l``.
    """
    phi = ACTIVATIONS[activation][0]
    L = len(h) - 1
    targets = [None] * (L + 1)
    targets[L] = top_target
    for l in range(L - 1, 0, -1):                     # 0-based layer l maps h[l] -> h[l + 1]
        targets[l] = h[l] - _inverse(params, l, h[l + 1], phi)[1] + _inverse(params, l, targets[l + 1], phi)[1]
    return targets[1:]


def inverse_grads(params: dict, activation: str, l: int, h_in, noise):
    """Reconstruction loss of layer ``l``'s (0-based, ``l >= 1``) inverse on noisy inputs, and its gradients.

    ``h_in`` is the layer's input ``h_{l-1}`` (M, n_in) and ``noise`` the ``sigma * eps`` added to it,
    an array of any namespace (drawn with numpy's generator, so every back end sees the same draws):
    it is moved to ``h_in``'s namespace and device. Returns ``(loss, {"l/V": ..., "l/c": ...})``.
    """
    phi, phi_prime = ACTIVATIONS[activation]
    xp = array_namespace(h_in)
    noisy = h_in + xp.asarray(noise, device=array_device(h_in))
    y = phi(noisy @ params[f"{l + 1}/W"].T)               # f_l(h~), held constant: only g_l learns here
    u, rec = _inverse(params, l, y, phi)
    r = rec - noisy
    M = h_in.shape[0]
    delta = (2.0 / M) * r * phi_prime(u)
    loss = xp.sum(xp.astype(r, xp.float64) ** 2) / M
    return loss, {f"{l + 1}/V": delta.T @ y, f"{l + 1}/c": xp.sum(delta, axis=0)}


class DTPResult(NamedTuple):
    """Hinge result at the top, per-layer target losses ``L_l``, per-layer inverse losses (layers >= 2)."""

    hinge: HingeResult
    layer_losses: list
    inverse_losses: list


def dtp_grads(params: dict, activation: str, x1, x2, hinge: HingeSettings, alpha: float, noise: dict):
    """One DTP step: hinge at the top head, targets down the stack, inverses on noisy inputs.

    ``noise[l]`` (0-based layers ``l = 1 .. L-1``, those with an inverse) is ``sigma * eps`` of shape
    (2N, n_{l-1}), added to that layer's inputs from view 2 then view 1: the inverses learn from
    both views' activity; any namespace (see :func:`inverse_grads`). Returns ``(DTPResult, grads)``.
    """
    xp = array_namespace(x1, x2)
    phi_prime = ACTIVATIONS[activation][1]
    L = sum(1 for k in params if k.endswith("/W"))
    top = f"{L}/"
    H = params[top + "H"]
    h1 = forward(params, x1, activation, L)[1]
    a2, h2 = forward(params, x2, activation, L)
    res = _hinge(h1[L] @ H.T, h2[L] @ H.T, hinge)
    G = res.grad
    N = x2.shape[0]
    grads = {top + "H": G.T @ h2[L]}
    targets = dtp_targets(params, activation, h2, h2[L] - alpha * N * (G @ H))
    layer_losses = []
    for l in range(L):
        diff = h2[l + 1] - targets[l]
        layer_losses.append(xp.sum(xp.astype(diff, xp.float64) ** 2) / N)
        grads[f"{l + 1}/W"] = ((2.0 / N) * diff * phi_prime(a2[l])).T @ h2[l]
    inverse_losses = []
    for l in range(1, L):
        loss, g = inverse_grads(params, activation, l, xp.concat([h2[l], h1[l]]), noise[l])
        inverse_losses.append(loss)
        grads.update(g)
    return DTPResult(res, layer_losses, inverse_losses), grads
