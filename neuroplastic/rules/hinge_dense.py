r"""Dense encoders for two-view learning: layers, linear heads, feedback matrices and inverses.

Layer ``l`` (1-based, in the equations and in the parameter dict: ``"{l}/..."``, as
in :class:`neuroplastic.engines.numpy.clapp_stack.ClappStack`) computes

.. math::

    a_l = W_l\, h_{l-1},\qquad h_l = \phi(a_l),\qquad h_0 = x \ (\text{the flattened image})

with ``phi`` = relu, hardtanh (the authors' default) or tanh and no biases (as
their encoders). A *head* is a linear map to the ``m``-dimensional space the
hinge loss compares, ``e = H_l h_l``: every layer has one for layer-wise
learning, only the top layer for end-to-end learning and DTP.

Parameters live in one flat dict, so optimisers and checkpoints treat them alike:

=============  ========================  =====================================================
key            shape                     what
=============  ========================  =====================================================
``l/W``        (n_l, n_{l-1})            feed-forward weights
``l/H``        (m, n_l)                  head of layer l
``l/B_H``      (m, n_l)                  feedback in place of ``H`` (RF, URF; FA at the top)
``l/B``        (n_l, n_{l-1})            feedback in place of ``W`` (FA, layers >= 2)
``l/V, l/c``   (n_{l-1}, n_l), n_{l-1}   learned inverse ``g_l(h) = phi(V h + c)`` (DTP, l >= 2)
=============  ========================  =====================================================

A feedback matrix starts with the distribution of the weights it stands in
for, so RF and FA errors have the scale BP errors would have.

:meth:`ViewEncoder.init` draws the weights with numpy's generator (one seed, one encoder on every
back end); the forward and backward passes take parameters and images of any array-API namespace
and device (numpy, torch, CuPy) and give their rates and gradients in it.
"""
from __future__ import annotations

import numpy as np

from .hinge_layers import ACTIVATIONS, forward, head_params, initialiser
from .hinge_methods import e2e_grads, layer_grads

__all__ = ["ACTIVATIONS", "ViewEncoder", "forward"]


class ViewEncoder:
    """A dense encoder with the heads, feedback matrices and inverses its method needs.

    Parameters
    ----------
    sizes : list of int
        Input size followed by the size of each layer.
    activation : str
        Key of :data:`ACTIVATIONS`.
    params : dict
        See the module docstring.
    """

    def __init__(self, sizes, activation: str, params: dict):
        self.sizes, self.activation, self.params = list(sizes), activation, params

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @classmethod
    def init(cls, sizes, activation: str, process: str, feedback: str, head: int, rng: np.random.Generator, *,
             dtype="float32", init_scale: float = 1.0, init: str = "he") -> "ViewEncoder":
        """Random weights for ``process`` (e2e, gll, rll, dtp) and ``feedback`` (bp, fa, rf, urf).

        ``init = "he"``: ``W ~ N(0, init_scale^2 * 2 / fan_in)`` (as the CLAPP stack); heads and inverses
        ``~ N(0, 1 / fan_in)``; inverse biases 0. ``init = "torch"``: every weight and inverse bias
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's ``nn.Linear`` defaults (the authors' layers).
        """
        draw = initialiser(rng, dtype, init)
        L = len(sizes) - 1
        params = {}
        for l in range(L):             # the encoder first: one seed, one random encoder for every method
            params[f"{l + 1}/W"] = draw((sizes[l + 1], sizes[l]), sizes[l], init_scale ** 2 * 2.0 / sizes[l])
        for l in range(L):
            n_in, n = sizes[l], sizes[l + 1]
            params |= head_params(l, n, last=l == L - 1, process=process, feedback=feedback, head=head, draw=draw)
            if feedback == "fa" and l >= 1:
                params[f"{l + 1}/B"] = draw((n, n_in), n_in, init_scale ** 2 * 2.0 / n_in)
            if process == "dtp" and l >= 1:
                params[f"{l + 1}/V"] = draw((n_in, n), n, 1.0 / n)
                params[f"{l + 1}/c"] = (draw((n_in,), n, 0.0) if init == "torch"
                                        else np.zeros(n_in, dtype=dtype))
        return cls(sizes, activation, params)

    def features(self, x: np.ndarray) -> list[np.ndarray]:
        """Rates ``h_1 ... h_L`` of every layer for flattened images ``x (n, n_in)``."""
        return forward(self.params, x, self.activation, self.n_layers)[1][1:]

    def layer_input(self, x: np.ndarray, l: int) -> np.ndarray:
        """Input ``h_l`` of layer ``l`` (0-based) from the (frozen) layers below, for flattened images ``x``."""
        return forward(self.params, x, self.activation, l)[1][l]

    def e2e_grads(self, x1, x2, hinge, feedback: str = "bp"):
        """:func:`~neuroplastic.rules.hinge_methods.e2e_grads` of this encoder (the interface of the conv encoder)."""
        return e2e_grads(self.params, self.activation, x1, x2, hinge, feedback)

    def layer_grads(self, l: int, x1, x2, hinge, feedback: str = "bp"):
        """:func:`~neuroplastic.rules.hinge_methods.layer_grads` of this encoder's layer ``l`` (0-based)."""
        return layer_grads(self.params, self.activation, l, x1, x2, hinge, feedback)
