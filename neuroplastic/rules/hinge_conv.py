r"""Convolutional encoders for two-view learning: conv layers, heads on their maps, feedback kernels.

Layer ``l`` (1-based, in the equations and in the parameter dict: ``"{l}/..."``, as
in :class:`~neuroplastic.rules.hinge_dense.ViewEncoder`) is a 3x3 convolution with
stride 1 and padding 1 (:mod:`neuroplastic.rules.conv`, channels-last maps), the
non-linearity (none for a linear layer, ``"L"`` in the architecture) and, if the
architecture has ``"M"`` after it, a 2x2 max-pool:

.. math::

    a_l = W_l * h_{l-1},\qquad z_l = \phi(a_l),\qquad h_l = \mathrm{pool}(z_l),
    \qquad h_0 = x \ (\text{images, } C_0 \text{ channels: 1 grey, 3 RGB})

with no biases. A head is a linear map, without bias, of what it reads of the
layer's output ``h_l`` (a ``u_l x v_l`` map of ``C_l`` channels, ``S_l = u_l v_l`` locations),
set by ``[rule] head_input``:

.. math::

    e_l = H_l f_l,\qquad f_l = \begin{cases}
        \frac{1}{S_l} \sum_s h_{l,s} & \text{"mean": } C_l \text{ inputs, every location alike} \\
        \mathrm{vec}(h_l) & \text{"flatten": } S_l C_l \text{ inputs (Tang et al.'s CONV6)} \\
        \mathrm{vec}(\mathrm{avg}_2(h_l)) & \text{"pool2": } \lfloor u_l/2 \rfloor \lfloor v_l/2 \rfloor C_l
            \text{ inputs (their VGG6)}
    \end{cases}

(``avg_2``: 2 x 2 average pool with stride 2, an odd last row or column dropped, as
torch does; ``vec`` flattens in (row, column, channel) order.)

The backward pass mirrors :mod:`~neuroplastic.rules.hinge_methods`. From ``G = dL/de``
at a head, ``delta f_l = G F_H``; the head's read sends it back to the map, ``R^T``:
the mean spreads it evenly over the ``S_l`` locations, the flatten reshapes it,
the average pool gives each of a window's four locations a quarter. The pool
routes it to each window's maximum, and

.. math::

    \delta_l = \mathrm{pool}^\top\!\big(R^\top \delta f_l\big) \odot \phi'(a_l),\qquad
    \frac{\partial L}{\partial W_l} = \sum_{n,s} \delta_{l,ns}\, \mathrm{window}_s(h_{l-1,n}),\qquad
    \delta h_{l-1} = \delta_l \star F_l

(weight gradient and col2im of :mod:`neuroplastic.rules.conv`). End-to-end BP:
``F_H = H``, ``F_l = W_l``; FA: ``F_H = B_H`` and ``F_l = B_l``, a fixed random
kernel. Layer-wise, layer ``l`` learns from its own head with its input as data,
through ``H_l`` (BP), a fixed ``B_H`` (RF) or a ``B_H`` updated like ``H_l`` (URF).
A linear layer has ``phi' = 1``.

Parameters, one flat dict as :class:`~neuroplastic.rules.hinge_dense.ViewEncoder`'s:

=============  ======================  =====================================================
key            shape                   what
=============  ======================  =====================================================
``l/W``        (C_l, 3, 3, C_{l-1})    kernel
``l/H``        (m, D_l)                head of layer l; ``D_l`` its inputs (C_l for "mean")
``l/B_H``      (m, D_l)                feedback in place of ``H`` (RF, URF; FA at the top)
``l/B``        (C_l, 3, 3, C_{l-1})    feedback kernel in place of ``W`` (FA, layers >= 2)
``l/V``        (C_l, 3, 3, C_{l-1})    DTP: kernel of the learned inverse ``g_l`` (layers >= 2)
``l/c``        (C_{l-1},)              DTP: its bias
=============  ======================  =====================================================

Difference target propagation (:meth:`ConvViewEncoder.dtp_grads`) is
:func:`~neuroplastic.rules.hinge_methods.dtp_grads` on maps: the top target
``hat h_L = h_L - alpha R^T(dl_i/df_L)``, the targets
``hat h_{l-1} = h_{l-1} - g_l(h_l) + g_l(hat h_l)`` and each layer's loss
``||h_l - hat h_l||^2 / N``, with a learned inverse per layer ``l >= 2`` that is a
transposed convolution, as the authors' ``ConvTranspose2d(kernel_size=3, stride=2,
padding=1, output_padding=1)`` (Tang, Yang & Amit's SSL-DTP code):

.. math::

    g_l(h) = \phi\big(V_l \star_s h + c_l\big),\qquad
    (V \star_s h)_{n,u,v,\iota} = \sum_{r,c,o,i,j\,:\; rs+i-1=u,\ cs+j-1=v} h_{n,r,c,o}\, V_{o,i,j,\iota}

the input gradient of a 3 x 3 convolution with stride ``s`` (2 across a max-pool,
1 otherwise) and padding 1, so that ``g_l`` maps layer ``l``'s output maps back to
the size of its input (a pooled layer needs inputs of even side). A linear layer's
inverse is linear. Each inverse learns to undo its layer on noisy inputs,
``L^inv_l = ||g_l(f_l(h~)) - h~||^2 / M`` with ``h~ = h_{l-1} + sigma eps``:

.. math::

    \frac{\partial L^{inv}}{\partial V_{o,i,j,\iota}} = \sum_{n,r,c} y_{n,r,c,o}\,
        \varepsilon_{n,\,rs+i-1,\,cs+j-1,\,\iota},\qquad
    \varepsilon = \frac{2}{M}\,(g_l(y) - \tilde h) \odot \phi'(u),\quad y = f_l(\tilde h)

the weight gradient of that convolution read with ``epsilon`` as its input and
``y`` as its error.

The random weights are drawn with numpy's generator (one seed, one encoder on every back end); the
forward and backward passes take parameters and images of any array-API namespace and device (numpy,
torch, CuPy) and give their maps, features and gradients in it.
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .architectures import odd_pooled_map, parse_architecture
from .conv import conv2d, conv2d_input_grad, conv2d_weight_grad, maxpool2, maxpool2_backward
from .hinge_layers import ACTIVATIONS, head_params, initialiser
from .hinge_methods import DTPResult, _hinge          # the hinge with every setting, the negatives' weight too

__all__ = ["HEAD_INPUTS", "ConvViewEncoder", "head_width"]

#: Every conv layer: a 3 x 3 kernel, stride 1, padding 1 (the map keeps its size; the pool halves it).
KERNEL, STRIDE, PADDING = 3, 1, 1
#: What a head reads of its layer's maps (``[rule] head_input``; see the module docstring).
HEAD_INPUTS = ("mean", "flatten", "pool2")


def _maps(x):
    """Grey images ``(N, h, w)`` get their channel axis; maps ``(N, h, w, C)`` pass unchanged."""
    return x[..., None] if x.ndim == 3 else x


def _avgpool2(h):
    """2 x 2 average pool, stride 2, of maps ``(N, h, w, C)``; an odd last row or column is dropped."""
    xp = array_namespace(h)
    N, r, c, C = h.shape
    r2, c2 = r // 2, c // 2
    return xp.mean(xp.reshape(h[:, :2 * r2, :2 * c2, :], (N, r2, 2, c2, 2, C)), axis=(2, 4))


def _avgpool2_backward(shape, dp):
    """``dL/dh`` (``shape``) from ``dp = dL/davg_2(h)``: a quarter to each location of the window."""
    xp = array_namespace(dp)
    dh = xp.zeros(tuple(shape), dtype=dp.dtype, device=array_device(dp))
    r2, c2 = dp.shape[1], dp.shape[2]
    dh[:, :2 * r2, :2 * c2, :] = xp.repeat(xp.repeat(dp / 4, 2, axis=1), 2, axis=2)
    return dh


def head_width(head_input: str, side: tuple[int, int], channels: int) -> int:
    """Inputs ``D`` of a head reading a ``side = (h, w)`` map of ``channels`` channels (what it allocates, and the
    memory estimate counts)."""
    if head_input == "mean":
        return channels
    if head_input == "flatten":
        return side[0] * side[1] * channels
    if head_input == "pool2":
        if min(side) < 2:
            raise ValueError(f"head_input 'pool2' averages 2 x 2 windows, and this layer's map is only "
                             f"{side[0]} x {side[1]}: use larger images, fewer max-pools or another head_input")
        return (side[0] // 2) * (side[1] // 2) * channels
    raise ValueError(f"unknown head_input {head_input!r}; allowed: {', '.join(map(repr, HEAD_INPUTS))}")


class ConvViewEncoder:
    """A convolutional encoder with the heads and feedback kernels its method needs.

    Parameters
    ----------
    arch : str or list
        A name in :data:`~neuroplastic.engines.numpy.conv_stack.ARCHITECTURES` or a list such as
        ``[32, "M", 64, "M"]`` (channel counts; ``"M"``: 2x2 max-pool after the layer before it; ``"L"``:
        that layer is linear).
    activation : str
        Key of :data:`~neuroplastic.rules.hinge_dense.ACTIVATIONS`.
    params : dict
        See the module docstring.
    in_channels : int
        Channels of the input (1: grey images). The forward pass reads them from the input maps.
    head_input : str
        What a head reads of its layer's maps: ``"mean"``, ``"flatten"`` or ``"pool2"`` (module docstring).
    """

    def __init__(self, arch, activation: str, params: dict, in_channels: int = 1, head_input: str = "mean"):
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"unknown head_input {head_input!r}; allowed: {', '.join(map(repr, HEAD_INPUTS))}")
        self.arch, self.activation, self.params, self.in_channels = arch, activation, params, in_channels
        self.head_input = head_input
        self.specs = parse_architecture(arch)

    @property
    def n_layers(self) -> int:
        return len(self.specs)

    @classmethod
    def init(cls, arch, activation: str, process: str, feedback: str, head: int, rng: np.random.Generator, *,
             in_channels: int = 1, dtype="float32", init_scale: float = 1.0, head_input: str = "mean",
             size: tuple[int, int] | None = None, init: str = "he") -> "ConvViewEncoder":
        """Random weights for ``process`` (e2e, gll, rll) and ``feedback`` (bp, fa, rf, urf).

        ``init = "he"``: kernels ``W ~ N(0, init_scale^2 * 2 / (9 C_in))`` (He-normal, fan-in of a 3x3
        window), feedback kernels alike; heads and ``B_H ~ N(0, 1 / D_l)``, ``D_l`` the head's inputs (its
        fan-in), which for ``head_input`` "flatten" and "pool2" depend on the input ``size = (h, w)``.
        ``init = "torch"``: each of them ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's defaults for the
        authors' ``nn.Conv2d`` and ``nn.Linear`` layers and their feedback weights.
        DTP's inverse kernels (layers >= 2) are drawn as PyTorch's ``ConvTranspose2d`` draws them, fan-in
        ``9 C_{l-1}``, or with ``init = "he"`` ``N(0, 1 / (9 C_l))`` (the fan-in of a window of their input)
        with zero biases; they need the input ``size``.
        The kernels are drawn first, so one seed gives one random encoder for every method.
        """
        if process not in ("e2e", "gll", "rll", "dtp"):
            raise ValueError(f"unknown process {process!r}; allowed: 'e2e', 'gll', 'rll', 'dtp'")
        if process == "dtp" and size is None:
            raise ValueError("process 'dtp': the inverses' shapes depend on the maps', so pass the input size = (h, w)")
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"unknown head_input {head_input!r}; allowed: {', '.join(map(repr, HEAD_INPUTS))}")
        if head_input != "mean" and size is None:
            raise ValueError(f"head_input {head_input!r}: the heads' sizes depend on the maps', so pass the "
                             "input size = (h, w)")

        draw = initialiser(rng, dtype, init)
        specs = parse_architecture(arch)
        channels = [in_channels, *(s.channels for s in specs)]
        L = len(specs)
        params = {}
        for l in range(L):
            fan_in = KERNEL * KERNEL * channels[l]
            params[f"{l + 1}/W"] = draw((channels[l + 1], KERNEL, KERNEL, channels[l]), fan_in,
                                        init_scale ** 2 * 2.0 / fan_in)
        side = tuple(size) if size is not None else None
        odd = odd_pooled_map(arch, size, first=2) if process == "dtp" else None
        for l in range(L):
            C_in, C = channels[l], channels[l + 1]
            if side is not None and specs[l].pool:
                if min(side) < 2:
                    raise ValueError(f"architecture {arch!r}: layer {l + 1}'s max-pool needs maps of side >= 2, "
                                     f"and inputs of {size[0]} x {size[1]} give {side[0]} x {side[1]}")
                side = (side[0] // 2, side[1] // 2)
            width = head_width(head_input, side, C)
            params |= head_params(l, width, last=l == L - 1, process=process, feedback=feedback, head=head,
                                  draw=draw)
            if feedback == "fa" and l >= 1:
                params[f"{l + 1}/B"] = draw((C, KERNEL, KERNEL, C_in), KERNEL * KERNEL * C_in,
                                           init_scale ** 2 * 2.0 / (KERNEL * KERNEL * C_in))
            if process == "dtp" and l >= 1:
                if odd is not None and odd[0] == l + 1:
                    raise ValueError(f"process 'dtp': layer {l + 1}'s inverse, a transposed convolution of stride 2, "
                                     f"undoes its max-pool only on maps of even side, and inputs of {size[0]} x "
                                     f"{size[1]} give it maps of {odd[1][0]} x {odd[1][1]}")
                # as torch's ConvTranspose2d(C, C_in) draws them: fan-in C_in * 9 (its weight's dimension 1)
                fan = KERNEL * KERNEL * C_in
                params[f"{l + 1}/V"] = draw((C, KERNEL, KERNEL, C_in), fan, 1.0 / (KERNEL * KERNEL * C))
                params[f"{l + 1}/c"] = (draw((C_in,), fan, 0.0) if init == "torch" else np.zeros(C_in, dtype=dtype))
        return cls(arch, activation, params, in_channels, head_input)

    # -- forward -----------------------------------------------------------------------------------

    def _up(self, l: int, x):
        """Layer ``l`` (0-based) on its input maps ``x``: drive ``a``, rates ``z = phi(a)``, output ``h``."""
        a = conv2d(x, self.params[f"{l + 1}/W"], STRIDE, PADDING)
        z = a if self.specs[l].linear else ACTIVATIONS[self.activation][0](a)
        return a, z, (maxpool2(z) if self.specs[l].pool else z)

    def _read(self, l: int, h):
        """What layer ``l``'s (0-based) head reads of its output maps ``h``: ``f_l`` (N, D_l)."""
        xp = array_namespace(h)
        if self.head_input == "mean":
            f = xp.mean(h, axis=(1, 2))
        else:
            f = xp.reshape(_avgpool2(h) if self.head_input == "pool2" else h, (h.shape[0], -1))
        D = self.params[f"{l + 1}/H"].shape[1]
        if f.shape[1] != D:
            raise ValueError(f"the head of layer {l + 1} has {D} inputs, and head_input {self.head_input!r} of "
                             f"its {h.shape[1]} x {h.shape[2]} x {h.shape[3]} maps gives {f.shape[1]}: the "
                             "encoder was made for inputs of another size or channel count")
        return f

    def layer_input(self, x, l: int):
        """Input of layer ``l`` (0-based) from the (frozen) layers below: ``h_l`` for images ``x``."""
        h = _maps(x)
        for k in range(l):
            h = self._up(k, h)[2]
        return h

    def features(self, x, batch: int = 256) -> list:
        """Spatial means (N, C_l) of every layer's output for images ``x`` (N, h, w) or (N, h, w, C).

        What the probe reads, whatever ``head_input``; :meth:`head_inputs` is what the heads read.
        """
        xp = array_namespace(x)
        out = [[] for _ in range(self.n_layers)]
        for n0 in range(0, x.shape[0], batch):         # bounded memory: the first maps are the largest
            h = _maps(x[n0:n0 + batch])
            for l in range(self.n_layers):
                h = self._up(l, h)[2]
                out[l].append(xp.mean(h, axis=(1, 2)))
        return [xp.concat(f) for f in out]

    def head_inputs(self, x, batch: int = 256) -> list:
        """``f_l`` (N, D_l) for every layer that has a head (``None`` for the others), images ``x``."""
        xp = array_namespace(x)
        L = self.n_layers
        out = [[] if f"{l + 1}/H" in self.params else None for l in range(L)]
        for n0 in range(0, x.shape[0], batch):
            h = _maps(x[n0:n0 + batch])
            for l in range(L):
                h = self._up(l, h)[2]
                if out[l] is not None:
                    out[l].append(self._read(l, h))
        return [None if f is None else xp.concat(f) for f in out]

    # -- backward ----------------------------------------------------------------------------------

    def _down(self, l: int, x, a, z, h, df, feedback_kernel=None):
        """From ``df = dL/df_l`` (N, D_l): ``dL/dW_l`` and, with ``feedback_kernel``, the error ``dh_{l-1}``.

        The head's read sent back (``R^T``): the mean gives every location ``df / S_l``, the flatten
        reshapes, the average pool gives a window's locations a quarter each; the max-pool then
        routes it to the window's maximum.
        """
        return self._down_maps(l, x, a, z, h, self._read_backward(h, df), feedback_kernel)

    def _read_backward(self, h, df):
        """``dL/dh_l`` (maps shaped as ``h``) from ``df = dL/df_l``: the head's read sent back, ``R^T df``."""
        xp = array_namespace(df)
        if self.head_input == "mean":
            S = h.shape[1] * h.shape[2]
            return xp.broadcast_to((df / S)[:, None, None, :], tuple(h.shape))
        if self.head_input == "flatten":
            return xp.reshape(df, tuple(h.shape))
        N, r, c, C = h.shape
        return _avgpool2_backward(h.shape, xp.reshape(df, (N, r // 2, c // 2, C)))

    def _down_maps(self, l: int, x, a, z, h, dh, feedback_kernel=None):
        """From ``dh = dL/dh_l`` (maps): ``delta_l = pool^T(dh) * phi'(a_l)``, ``dL/dW_l``, ``delta * F_l``."""
        dz = maxpool2_backward(z, h, dh) if self.specs[l].pool else dh
        delta = dz if self.specs[l].linear else dz * ACTIVATIONS[self.activation][1](a)
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
        e1 = self._read(L - 1, self.layer_input(x1, L)) @ H.T
        xs, caches = [_maps(x2)], []
        for l in range(L):
            caches.append(self._up(l, xs[-1]))
            xs.append(caches[-1][2])
        f2 = self._read(L - 1, xs[L])
        res = _hinge(e1, f2 @ H.T, hinge)
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
        e1 = self._read(l, self._up(l, _maps(x1))[2]) @ H.T
        a, z, h = self._up(l, x2)
        f2 = self._read(l, h)
        res = _hinge(e1, f2 @ H.T, hinge)
        G = res.grad
        grads = {pre + "H": G.T @ f2}
        df = G @ (H if feedback == "bp" else self.params[pre + "B_H"])
        grads[pre + "W"] = self._down(l, x2, a, z, h, df)[0]
        if feedback == "urf":
            grads[pre + "B_H"] = array_namespace(G).asarray(grads[pre + "H"], copy=True)
        return res, grads

    # -- difference target propagation ---------------------------------------------------------------

    def _inverse(self, l: int, h, size):
        """``g_l(h)`` of layer ``l`` (0-based, ``l >= 1``): drive ``u`` and output, maps of ``size = (h, w)``."""
        stride = 2 if self.specs[l].pool else 1
        u = conv2d_input_grad(h, self.params[f"{l + 1}/V"], stride, PADDING, size=size) + self.params[f"{l + 1}/c"]
        return u, (u if self.specs[l].linear else ACTIVATIONS[self.activation][0](u))

    def inverse_input_shape(self, l: int, size) -> tuple[int, int, int]:
        """``(h, w, C)`` of layer ``l``'s (0-based) input maps for images of ``size = (h, w)``: what its inverse
        reconstructs, and the shape of the noise it learns from (per image)."""
        side = tuple(size)
        for spec in self.specs[:l]:
            side = (side[0] // 2, side[1] // 2) if spec.pool else side
        return (*side, self.specs[l - 1].channels if l else self.in_channels)

    def inverse_grads(self, l: int, h_in, noise):
        """Reconstruction loss of layer ``l``'s (0-based, ``l >= 1``) inverse on noisy inputs, and its gradients.

        ``h_in``: the layer's input maps (M, h, w, C_{l-1}); ``noise``: ``sigma eps`` of that shape, any namespace
        (moved to ``h_in``'s). Returns ``(loss, {"l/V": ..., "l/c": ...})`` (module docstring).
        """
        xp = array_namespace(h_in)
        noisy = h_in + xp.asarray(noise, device=array_device(h_in))
        y = self._up(l, noisy)[2]                           # f_l(h~), held constant: only g_l learns here
        u, rec = self._inverse(l, y, tuple(noisy.shape[1:3]))
        r = rec - noisy
        M = h_in.shape[0]
        eps = (2.0 / M) * r
        if not self.specs[l].linear:
            eps = eps * ACTIVATIONS[self.activation][1](u)
        stride = 2 if self.specs[l].pool else 1
        loss = xp.sum(xp.astype(r, xp.float64) ** 2) / M
        return loss, {f"{l + 1}/V": conv2d_weight_grad(eps, y, KERNEL, stride, PADDING),
                      f"{l + 1}/c": xp.sum(eps, axis=(0, 1, 2))}

    def _dtp_pass(self, x1, x2, hinge, alpha: float):
        """Both views up the stack, the hinge at the top head, the targets down: what a DTP step starts from."""
        L, p = self.n_layers, self.params
        H = p[f"{L}/H"]
        h1 = [_maps(x1)]
        for l in range(L):
            h1.append(self._up(l, h1[-1])[2])
        h2, caches = [_maps(x2)], []
        for l in range(L):
            caches.append(self._up(l, h2[-1]))
            h2.append(caches[-1][2])
        f2 = self._read(L - 1, h2[L])
        res = _hinge(self._read(L - 1, h1[L]) @ H.T, f2 @ H.T, hinge)
        N = x2.shape[0]
        targets = [None] * (L + 1)              # targets[l]: of h_l, the output of 0-based layer l - 1
        targets[L] = h2[L] - (alpha * N) * self._read_backward(h2[L], res.grad @ H)
        for l in range(L - 1, 0, -1):           # layer l's inverse maps h_{l+1} back to h_l
            size = tuple(h2[l].shape[1:3])
            targets[l] = h2[l] - self._inverse(l, h2[l + 1], size)[1] + self._inverse(l, targets[l + 1], size)[1]
        return res, f2, h1, h2, caches, targets

    def dtp_targets(self, x1, x2, hinge, alpha: float) -> list:
        """The targets ``[hat h_1, ..., hat h_L]`` (maps) of a DTP step on views ``x1, x2`` (see :meth:`dtp_grads`)."""
        return self._dtp_pass(x1, x2, hinge, alpha)[-1][1:]

    def dtp_grads(self, x1, x2, hinge, alpha: float, noise: dict):
        """One DTP step on maps: the top head from the hinge, every layer from its target, the inverses.

        ``x1, x2``: two views; ``hinge``: a :class:`~neuroplastic.rules.hinge_methods.HingeSettings`; ``alpha``:
        the top target's step; ``noise[l]`` (layers ``l = 1 .. L-1``, 0-based, those with an inverse): ``sigma
        eps`` of shape ``(2N, *inverse_input_shape(l, size))``, added to that layer's inputs from view 2 then
        view 1. Returns ``(DTPResult, grads)`` as :func:`~neuroplastic.rules.hinge_methods.dtp_grads`.
        """
        xp = array_namespace(x1, x2)
        L = self.n_layers
        res, f2, h1, h2, caches, targets = self._dtp_pass(x1, x2, hinge, alpha)
        N = x2.shape[0]
        grads = {f"{L}/H": res.grad.T @ f2}
        layer_losses = []
        for l in range(L):
            diff = h2[l + 1] - targets[l + 1]
            layer_losses.append(xp.sum(xp.astype(diff, xp.float64) ** 2) / N)
            grads[f"{l + 1}/W"] = self._down_maps(l, h2[l], *caches[l], (2.0 / N) * diff)[0]
        inverse_losses = []
        for l in range(1, L):
            loss, g = self.inverse_grads(l, xp.concat([h2[l], h1[l]]), noise[l])
            inverse_losses.append(loss)
            grads.update(g)
        return DTPResult(res, layer_losses, inverse_losses), grads
