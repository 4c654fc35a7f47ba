r"""Convolutional encoders for two-view learning: conv layers, heads on spatial means, feedback kernels.

Layer ``l`` (1-based, in the equations and in the parameter dict: ``"{l}/..."``, as
in :class:`~neuroplastic.rules.hinge_dense.ViewEncoder`) is a 3x3 convolution with
stride 1 and padding 1 (:mod:`neuroplastic.rules.conv`, channels-last maps), the
non-linearity and, if the architecture has ``"M"`` after it, a 2x2 max-pool:

.. math::

    a_l = W_l * h_{l-1},\qquad z_l = \phi(a_l),\qquad h_l = \mathrm{pool}(z_l),
    \qquad h_0 = x \ (\text{grey images, one channel})

with no biases. A head reads the spatial mean of the layer's output, so it
sees every location alike whatever the size of the map:

.. math::

    f_l = \frac{1}{S_l} \sum_s h_{l,s},\qquad e_l = H_l f_l

The backward pass mirrors :mod:`~neuroplastic.rules.hinge_methods`. From ``G = dL/de``
at a head, ``delta f_l = G F_H``; the mean spreads it evenly over the ``S_l``
locations, the pool routes it to each window's maximum, and

.. math::

    \delta_l = \mathrm{pool}^\top\!\Big(\frac{\delta f_l}{S_l}\Big) \odot \phi'(a_l),\qquad
    \frac{\partial L}{\partial W_l} = \sum_{n,s} \delta_{l,ns}\, \mathrm{window}_s(h_{l-1,n}),\qquad
    \delta h_{l-1} = \delta_l \star F_l

(weight gradient and col2im of :mod:`neuroplastic.rules.conv`). End-to-end BP:
``F_H = H``, ``F_l = W_l``; FA: ``F_H = B_H`` and ``F_l = B_l``, a fixed random
kernel. Layer-wise, layer ``l`` learns from its own head with its input as data,
through ``H_l`` (BP), a fixed ``B_H`` (RF) or a ``B_H`` updated like ``H_l`` (URF).

Parameters, one flat dict as :class:`~neuroplastic.rules.hinge_dense.ViewEncoder`'s:

=============  ======================  =====================================================
key            shape                   what
=============  ======================  =====================================================
``l/W``        (C_l, 3, 3, C_{l-1})    kernel
``l/H``        (m, C_l)                head of layer l
``l/B_H``      (m, C_l)                feedback in place of ``H`` (RF, URF; FA at the top)
``l/B``        (C_l, 3, 3, C_{l-1})    feedback kernel in place of ``W`` (FA, layers >= 2)
=============  ======================  =====================================================

Difference target propagation would need learned inverses of conv layers; it is
not implemented here.
"""
from __future__ import annotations

import numpy as np

from .architectures import parse_architecture
from .conv import conv2d, conv2d_input_grad, conv2d_weight_grad, maxpool2, maxpool2_backward
from .hinge import hinge_views
from .hinge_layers import ACTIVATIONS, gaussian, head_params

__all__ = ["ConvViewEncoder"]

#: Every conv layer: a 3 x 3 kernel, stride 1, padding 1 (the map keeps its size; the pool halves it).
KERNEL, STRIDE, PADDING = 3, 1, 1


def _maps(x):
    """Grey images ``(N, h, w)`` get their channel axis; maps ``(N, h, w, C)`` pass unchanged."""
    return x[..., None] if x.ndim == 3 else x


class ConvViewEncoder:
    """A convolutional encoder with the heads and feedback kernels its method needs.

    Parameters
    ----------
    arch : str or list
        A name in :data:`~neuroplastic.engines.numpy.conv_stack.ARCHITECTURES` or a list such as
        ``[32, "M", 64, "M"]`` (channel counts; ``"M"``: 2x2 max-pool after the layer before it).
    activation : str
        Key of :data:`~neuroplastic.rules.hinge_dense.ACTIVATIONS`.
    params : dict
        See the module docstring.
    in_channels : int
        Channels of the input (1: grey images).
    """

    def __init__(self, arch, activation: str, params: dict, in_channels: int = 1):
        self.arch, self.activation, self.params, self.in_channels = arch, activation, params, in_channels
        self.specs = parse_architecture(arch)

    @property
    def n_layers(self) -> int:
        return len(self.specs)

    @classmethod
    def init(cls, arch, activation: str, process: str, feedback: str, head: int, rng: np.random.Generator, *,
             in_channels: int = 1, dtype="float32", init_scale: float = 1.0) -> "ConvViewEncoder":
        """Random weights for ``process`` (e2e, gll, rll) and ``feedback`` (bp, fa, rf, urf).

        Kernels ``W ~ N(0, init_scale^2 * 2 / (9 C_in))`` (He-normal, fan-in of a 3x3 window),
        feedback kernels alike; heads and ``B_H ~ N(0, 1 / C_l)``. The kernels are drawn first,
        so one seed gives one random encoder for every method.
        """
        if process not in ("e2e", "gll", "rll"):
            raise ValueError(f"process {process!r} is not implemented for conv encoders; allowed: 'e2e', 'gll', "
                             "'rll' (DTP needs dense layers)")

        normal = gaussian(rng, dtype)
        specs = parse_architecture(arch)
        channels = [in_channels, *(s.channels for s in specs)]
        L = len(specs)
        params = {}
        for l in range(L):
            fan_in = KERNEL * KERNEL * channels[l]
            params[f"{l + 1}/W"] = normal((channels[l + 1], KERNEL, KERNEL, channels[l]), init_scale ** 2 * 2.0 / fan_in)
        for l in range(L):
            C_in, C = channels[l], channels[l + 1]
            params |= head_params(l, C, last=l == L - 1, process=process, feedback=feedback, head=head,
                                  normal=normal)
            if feedback == "fa" and l >= 1:
                params[f"{l + 1}/B"] = normal((C, KERNEL, KERNEL, C_in), init_scale ** 2 * 2.0 / (KERNEL * KERNEL * C_in))
        return cls(arch, activation, params, in_channels)

    # -- forward -----------------------------------------------------------------------------------

    def _up(self, l: int, x):
        """Layer ``l`` (0-based) on its input maps ``x``: drive ``a``, rates ``z = phi(a)``, output ``h``."""
        a = conv2d(x, self.params[f"{l + 1}/W"], STRIDE, PADDING)
        z = ACTIVATIONS[self.activation][0](a)
        return a, z, (maxpool2(z) if self.specs[l].pool else z)

    def layer_input(self, x, l: int):
        """Input of layer ``l`` (0-based) from the (frozen) layers below: ``h_l`` for images ``x``."""
        h = _maps(x)
        for k in range(l):
            h = self._up(k, h)[2]
        return h

    def features(self, x, batch: int = 256) -> list[np.ndarray]:
        """Spatial means ``f_1 ... f_L`` (N, C_l) of every layer's output for images ``x`` (N, h, w)."""
        out = [[] for _ in range(self.n_layers)]
        for n0 in range(0, len(x), batch):             # bounded memory: the first maps are the largest
            h = _maps(x[n0:n0 + batch])
            for l in range(self.n_layers):
                h = self._up(l, h)[2]
                out[l].append(h.mean(axis=(1, 2)))
        return [np.concatenate(f) for f in out]

    # -- backward ----------------------------------------------------------------------------------

    def _down(self, l: int, x, a, z, h, df, feedback_kernel=None):
        """From ``df = dL/df_l`` (N, C_l): ``dL/dW_l`` and, with ``feedback_kernel``, the error ``dh_{l-1}``.

        The mean gives every location ``df / S_l``; the pool routes it to the window's maximum.
        """
        S = h.shape[1] * h.shape[2]
        dh = np.broadcast_to((df / S)[:, None, None, :], h.shape)
        return self._down_maps(l, x, a, z, h, dh, feedback_kernel)

    def _down_maps(self, l: int, x, a, z, h, dh, feedback_kernel=None):
        """From ``dh = dL/dh_l`` (maps): ``delta_l = pool^T(dh) * phi'(a_l)``, ``dL/dW_l``, ``delta * F_l``."""
        dz = maxpool2_backward(z, h, dh) if self.specs[l].pool else dh
        delta = dz * ACTIVATIONS[self.activation][1](a)
        dW = conv2d_weight_grad(x, delta, KERNEL, STRIDE, PADDING)
        if feedback_kernel is None:
            return dW, None
        return dW, conv2d_input_grad(delta, feedback_kernel, STRIDE, PADDING)

    def e2e_grads(self, x1, x2, hinge, feedback: str = "bp"):
        """End-to-end BP (``feedback="bp"``) or feedback alignment (``"fa"``) through every layer.

        ``x1, x2``: two views (N, h, w) of the same images; ``hinge`` a
        :class:`~neuroplastic.rules.hinge_methods.HingeSettings`. Returns ``(HingeResult, grads)`` with
        gradients for every ``W`` and the top head ``H``.
        """
        if feedback not in ("bp", "fa"):
            raise ValueError(f"end-to-end feedback {feedback!r}; allowed: 'bp', 'fa'")
        L, p = self.n_layers, self.params
        top = f"{L}/"
        H = p[top + "H"]
        e1 = self.layer_input(x1, L).mean(axis=(1, 2)) @ H.T
        xs, caches = [_maps(x2)], []
        for l in range(L):
            caches.append(self._up(l, xs[-1]))
            xs.append(caches[-1][2])
        f2 = xs[L].mean(axis=(1, 2))
        res = hinge_views(e1, f2 @ H.T, hinge.tau, hinge.delta, hinge.negatives)
        G = res.grad
        grads = {top + "H": G.T @ f2}
        df = G @ (H if feedback == "bp" else p[top + "B_H"])
        grads[top + "W"], dh = self._down(L - 1, xs[L - 1], *caches[L - 1], df, self._feedback(L - 1, feedback))
        for l in range(L - 2, -1, -1):
            grads[f"{l + 1}/W"], dh = self._down_maps(l, xs[l], *caches[l], dh, self._feedback(l, feedback))
        return res, grads

    def _feedback(self, l: int, feedback: str):
        """Kernel carrying the error from layer ``l`` down: ``W_l`` (BP), ``B_l`` (FA); none below the first."""
        if l == 0:
            return None
        return self.params[f"{l + 1}/" + ("W" if feedback == "bp" else "B")]

    def layer_grads(self, l: int, x1, x2, hinge, feedback: str = "bp"):
        """Layer ``l`` (0-based) learning from its own head; ``x1, x2`` are its inputs (:meth:`layer_input`).

        ``feedback``: ``"bp"`` (through ``H_l``), ``"rf"`` (fixed ``B_H``) or ``"urf"`` (``B_H``, which
        also gets the head's gradient). Returns ``(HingeResult, grads)``.
        """
        if feedback not in ("bp", "rf", "urf"):
            raise ValueError(f"layer-wise feedback {feedback!r}; allowed: 'bp', 'rf', 'urf'")
        pre = f"{l + 1}/"
        H = self.params[pre + "H"]
        x2 = _maps(x2)
        e1 = self._up(l, _maps(x1))[2].mean(axis=(1, 2)) @ H.T
        a, z, h = self._up(l, x2)
        f2 = h.mean(axis=(1, 2))
        res = hinge_views(e1, f2 @ H.T, hinge.tau, hinge.delta, hinge.negatives)
        G = res.grad
        grads = {pre + "H": G.T @ f2}
        df = G @ (H if feedback == "bp" else self.params[pre + "B_H"])
        grads[pre + "W"] = self._down(l, x2, a, z, h, df)[0]
        if feedback == "urf":
            grads[pre + "B_H"] = grads[pre + "H"].copy()
        return res, grads
