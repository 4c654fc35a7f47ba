r"""Retinotopic (locally connected) CLAPP layers: each neuron sees a patch of the layer below, no weight sharing.

The biologically plausible analogue of the conv encoder. A layer is a ``grid x grid`` sheet of
*locations*, each holding ``channels`` two-compartment neurons; a neuron at location ``(r, c)``
receives the ``kernel x kernel`` block of locations of the layer below that starts at
``(stride r, stride c)`` (all their channels), each synapse with its own weight. The prediction
``W_pred`` (and CLAPP's ``W_retro``) connects the neurons of one location among themselves only,
so each location has its own score and modulation factor, as in conv CLAPP's per-location score:

.. math::

    u_p = \sum_{i \in p} z_i d_i,\qquad \gamma_p = y\,\Theta(1 - y u_p),\qquad
    L = \sum_p \max(0,\, 1 - y u_p)

and every synapse onto a neuron of location ``p`` learns with ``gamma_p`` (the rule of
:mod:`~neuroplastic.rules.clapp` with the score summed per location). A dense layer is the case of
one location that sees everything.

Neurons are numbered location-major, ``index = (r grid + c) channels + channel``, the order in
which glimpses flatten a ``patch x patch x C`` block (:func:`~neuroplastic.stimuli.glimpse_grid`),
so the input is a layer of ``patch x patch`` locations of ``C`` channels. The numpy engine stores
``W`` as a dense ``(n, n_in)`` matrix that is zero off the connections (and keeps it so: the
gradients are masked); Brian2 creates only the connected synapses (``connect(i=..., j=...)``).

Examples
--------
>>> from neuroplastic.rules.retinotopic import Layout
>>> layer = Layout.retinotopic(grid_in=8, channels_in=1, kernel=4, stride=2, channels=16)
>>> layer.grid, layer.locations, layer.n, int(layer.ff_mask.sum(axis=1)[0])
(3, 9, 144, 16)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

__all__ = ["Layout", "dense_layouts", "grid_side", "init_layout_params", "stack_layouts", "stack_sizes"]


def grid_side(grid_in: int, kernel: int, stride: int) -> int:
    """Side of a retinotopic layer's sheet of locations on a ``grid_in x grid_in`` sheet below.

    Raises ValueError if the kernel does not fit the sheet below.
    """
    if not 1 <= kernel <= grid_in:
        raise ValueError(f"kernel {kernel} does not fit the {grid_in} x {grid_in} locations below "
                         f"(allowed: 1 to {grid_in})")
    return (grid_in - kernel) // stride + 1


@dataclass(frozen=True, eq=False)
class Layout:
    """Which inputs each neuron of one layer sees, and at which location it sits.

    ``ff_mask`` (n, n_in) marks the feed-forward connections, ``pred_mask`` (n, n) the prediction
    (and retrodiction) connections; the layer has ``locations`` locations of ``n // locations``
    neurons each, numbered location-major. ``grid`` is the side of the location sheet (0: dense).
    """

    n_in: int
    n: int
    locations: int
    ff_mask: np.ndarray = field(repr=False)
    pred_mask: np.ndarray = field(repr=False)
    grid: int = 0
    channels: int = 0
    _masks: dict = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def dense(cls, n_in: int, n: int) -> "Layout":
        """All-to-all: one location, whose score sums every neuron (the dense CLAPP layer)."""
        return cls(n_in, n, 1, np.ones((n, n_in), bool), np.ones((n, n), bool), 0, n)

    @classmethod
    def retinotopic(cls, grid_in: int, channels_in: int, kernel: int, stride: int, channels: int) -> "Layout":
        """A ``grid x grid`` sheet of ``channels`` neurons per location on a ``grid_in x grid_in`` sheet below.

        Raises ValueError if the kernel does not fit the sheet below.
        """
        grid = grid_side(grid_in, kernel, stride)
        n_in, n, locations = grid_in * grid_in * channels_in, grid * grid * channels, grid * grid
        # what one location sees: a kernel x kernel block of the sheet below, every channel
        seen = np.zeros((locations, grid_in, grid_in, channels_in), bool)
        for p in range(locations):
            r, c = divmod(p, grid)
            seen[p, r * stride:r * stride + kernel, c * stride:c * stride + kernel] = True
        ff = np.repeat(seen.reshape(locations, n_in), channels, axis=0)
        same = np.arange(n) // channels
        return cls(n_in, n, locations, ff, same[:, None] == same[None, :], grid, channels)

    @cached_property
    def is_dense(self) -> bool:
        return self.locations == 1 and bool(self.ff_mask.all())

    @cached_property
    def location(self) -> np.ndarray:
        """The location of each neuron (n,)."""
        return np.arange(self.n) // (self.n // self.locations)

    @cached_property
    def fan_in(self) -> int:
        """Inputs each neuron sees (the He scale of its weights)."""
        return int(self.ff_mask[0].sum())

    def connections(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(post, pre)`` index arrays of the synapses of ``"W"`` or ``"W_pred"``/``"W_retro"``, pre-major.

        For a dense layer this is every pair, presynaptic neuron by presynaptic neuron.
        """
        pre, post = np.nonzero((self.ff_mask if key == "W" else self.pred_mask).T)
        return post, pre

    def mask(self, key: str) -> np.ndarray:
        return self.ff_mask if key == "W" else self.pred_mask

    def masks_like(self, W) -> tuple:
        """``(ff_mask, pred_mask)`` as arrays of ``W``'s kind: its array library, dtype and device.

        Made once per kind and kept, because a rule multiplies its gradients by them at every step:
        converting the boolean masks anew would allocate two weight-sized arrays each time, and on a
        GPU copy them from host memory each time.
        """
        xp = array_namespace(W)
        kind = (xp.__name__, str(W.dtype), str(array_device(W)))
        if kind not in self._masks:
            self._masks[kind] = tuple(xp.asarray(m, dtype=W.dtype, device=array_device(W))
                                      for m in (self.ff_mask, self.pred_mask))
        return self._masks[kind]


def dense_layouts(sizes: list[int]) -> list[Layout]:
    """Dense layers of ``sizes`` neurons (input first), each with one location."""
    return [Layout.dense(a, b) for a, b in zip(sizes[:-1], sizes[1:])]


def stack_sizes(n_in: int, layers: list[int], connectivity: str = "dense", *, patch: int = 0,
                kernel: list[int] = (3,), stride: list[int] = (1,)) -> list[int]:
    """Inputs and neurons of each layer of :func:`stack_layouts` (arithmetic only: no wiring is built)."""
    if connectivity == "dense":
        return [int(n_in), *(int(n) for n in layers)]
    if patch < 1 or n_in % (patch * patch):
        raise ValueError(f"{n_in} inputs are not a {patch} x {patch} patch of channels")
    kernel, stride = _per_layer(kernel, layers, "kernel"), _per_layer(stride, layers, "stride")
    sizes, grid = [int(n_in)], patch
    for l, (n, k, s) in enumerate(zip(layers, kernel, stride)):
        try:
            grid = grid_side(grid, k, s)
        except ValueError as err:
            raise ValueError(f"layer {l + 1}: {err}") from None
        sizes.append(grid * grid * int(n))
    return sizes


def stack_layouts(n_in: int, layers: list[int], connectivity: str = "dense", *, patch: int = 0,
                  kernel: list[int] = (3,), stride: list[int] = (1,)) -> list[Layout]:
    """The layouts of a stack: dense layers of ``layers`` neurons, or retinotopic ones of ``layers`` channels.

    Retinotopic: the input is a ``patch x patch`` sheet of ``n_in / patch^2`` channels; ``kernel`` and
    ``stride`` give one value for every layer or one per layer. Raises ValueError naming the layer
    whose kernel does not fit.
    """
    sizes = stack_sizes(n_in, layers, connectivity, patch=patch, kernel=kernel, stride=stride)
    if connectivity == "dense":
        return dense_layouts(sizes)
    kernel, stride = _per_layer(kernel, layers, "kernel"), _per_layer(stride, layers, "stride")
    out, grid, channels = [], patch, n_in // (patch * patch)
    for n, k, s in zip(layers, kernel, stride):
        out.append(Layout.retinotopic(grid, channels, k, s, n))
        grid, channels = out[-1].grid, n
    return out


def _per_layer(values, layers, name) -> list[int]:
    values = list(values)
    if len(values) == 1:
        return values * len(layers)
    if len(values) != len(layers):
        raise ValueError(f"{name} has {len(values)} values for {len(layers)} layers: give one, or one per layer")
    return values


def init_layout_params(layouts: list[Layout], retro: bool, rng: np.random.Generator, *, dtype="float32",
                       init_scale: float = 1.0, pred_init_scale: float = 0.1) -> dict:
    """Initial weights of a stack of (dense or retinotopic) CLAPP layers, as every engine starts it.

    He-normal feed-forward weights ``W ~ N(0, init_scale^2 * 2 / fan_in)``, ``fan_in`` the inputs a
    neuron sees; small random prediction weights ``W_pred ~ N(0, pred_init_scale^2 / m)``, ``m`` the
    neurons of a location (all of a dense layer); with ``retro`` (CLAPP), an independent ``W_retro``
    from the same distribution (drawn right after its layer's ``W_pred``), as the authors initialise
    it. Zero off the connections. Keys ``"{l}/W"``, ``"{l}/W_pred"``, ``"{l}/W_retro"``, layers from
    1; the draws come in this order from ``rng`` (full matrices), so one seed gives one network on
    every engine.
    """
    params = {}
    for l, lay in enumerate(layouts):
        m = lay.n // lay.locations

        def masked(w, mask):
            return (w if lay.is_dense else w * mask).astype(dtype)

        W = rng.standard_normal((lay.n, lay.n_in)) * init_scale * np.sqrt(2.0 / lay.fan_in)
        params[f"{l + 1}/W"] = masked(W, lay.ff_mask)
        params[f"{l + 1}/W_pred"] = masked(rng.standard_normal((lay.n, lay.n)) * pred_init_scale / np.sqrt(m),
                                           lay.pred_mask)
        if retro:
            params[f"{l + 1}/W_retro"] = masked(rng.standard_normal((lay.n, lay.n)) * pred_init_scale / np.sqrt(m),
                                                lay.pred_mask)
    return params
