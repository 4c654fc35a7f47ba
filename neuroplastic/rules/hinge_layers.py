"""The pieces the dense and conv hinge encoders share: activations, the dense forward pass, initialisers.

Kept apart from the encoders so that the methods (:mod:`~neuroplastic.rules.hinge_methods`) and both encoders
(:mod:`~neuroplastic.rules.hinge_dense`, :mod:`~neuroplastic.rules.hinge_conv`) import them one way, without a cycle.
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

__all__ = ["ACTIVATIONS", "INITS", "forward", "head_params", "initialiser"]


def _relu(a):
    xp = array_namespace(a)
    return xp.maximum(a, xp.zeros_like(a))


def _relu_prime(a):
    return array_namespace(a).astype(a > 0, a.dtype)


def _hardtanh(a):
    return array_namespace(a).clip(a, -1.0, 1.0)


def _hardtanh_prime(a):
    xp = array_namespace(a)
    return xp.astype(xp.abs(a) < 1, a.dtype)


def _tanh(a):
    return array_namespace(a).tanh(a)


def _tanh_prime(a):
    xp = array_namespace(a)
    return xp.astype(1 - xp.tanh(a) ** 2, a.dtype, copy=False)


#: ``name -> (phi, phi')``; derivatives are 0 at the kinks, as autograd takes them. Both take and give
#: arrays of any array-API namespace (numpy, torch, CuPy).
ACTIVATIONS = {
    "relu": (_relu, _relu_prime),
    "hardtanh": (_hardtanh, _hardtanh_prime),
    "tanh": (_tanh, _tanh_prime),
}


def forward(params: dict, x: np.ndarray, activation: str, n_layers: int | None = None):
    """Drives ``a[l]`` and rates ``h[l + 1]`` of the first ``n_layers`` layers; ``h[0] = x``.

    ``x`` and the weights are arrays of one namespace and device (numpy, torch, CuPy).
    """
    phi = ACTIVATIONS[activation][0]
    n_layers = sum(1 for k in params if k.endswith("/W")) if n_layers is None else n_layers
    a, h = [], [x]
    for l in range(n_layers):
        a.append(h[-1] @ params[f"{l + 1}/W"].T)
        h.append(phi(a[-1]))
    return a, h


#: How the Tang encoders' weights start: ``"he"``, normal with the variance each caller names (He-normal
#: kernels, heads N(0, 1 / fan_in)); ``"torch"``, PyTorch's defaults as the authors' layers start
#: (``kaiming_uniform_(a=sqrt(5))`` for weights and feedback weights alike, biases the same range):
#: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
INITS = ("he", "torch")


def initialiser(rng: np.random.Generator, dtype, init: str = "he"):
    """``draw(shape, fan_in, var)``: one weight array in ``dtype``, drawn as ``init`` says (:data:`INITS`).

    ``var`` is the He-normal variance (``init = "he"``); ``init = "torch"`` ignores it and draws
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. One helper, so every weight of the dense and conv
    encoders starts by the same choice.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(map(repr, INITS))}")

    def draw(shape, fan_in, var):
        if init == "torch":
            bound = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(dtype)
        return (rng.standard_normal(shape) * np.sqrt(var)).astype(dtype)
    return draw


def head_params(l: int, width: int, *, last: bool, process: str, feedback: str, head: int, draw) -> dict:
    """Layer ``l``'s head ``H_l`` (fan-in ``width``; ``"he"``: ``N(0, 1/width)``) and, with random feedback,
    its ``B_H_l`` alike; ``draw`` from :func:`initialiser`.

    Layer-wise processes (GLL, RLL) put a head on every layer, end-to-end ones on the last only.
    Shared by the dense and the conv encoders (:mod:`neuroplastic.rules.hinge_conv`).
    """
    params = {}
    if process in ("gll", "rll") or last:
        params[f"{l + 1}/H"] = draw((head, width), width, 1.0 / width)
        if feedback in ("rf", "urf", "fa"):
            params[f"{l + 1}/B_H"] = draw((head, width), width, 1.0 / width)
    return params
