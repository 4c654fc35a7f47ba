"""A stack of dense CLAPP layers: the numpy reference network.

Every layer learns only from its own loss (science page of the docs, CLAPP); its input is the
previous layer's rate, treated as data (no error crosses layers). Parameters
live in one flat dict (``"1/W"``, ``"1/W_pred"``, ``"2/W"``, ...; layers from 1) so optimisers
and checkpoints handle them uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from ...rules import RULES, Rule, clapp_sequences, stack_rates
from ...rules.retinotopic import Layout, dense_layouts, init_layout_params
from .backend import host_floats

__all__ = ["ClappStack", "BatchStats"]


@dataclass(frozen=True)
class BatchStats:
    """Per-layer loss and fraction of pairs with a non-zero modulation factor gamma."""

    loss: list[float]
    modulated: list[float]


class ClappStack:
    """Two-compartment rate layers, dense or retinotopic, trained with CLAPP or CLAPP-s.

    Parameters
    ----------
    sizes : list of int
        Input size followed by the size of each layer.
    rule : Rule or str
        Entry of :data:`neuroplastic.rules.RULES`.
    params : dict
        ``"{l}/W"``, ``"{l}/W_pred"`` (and ``"{l}/W_retro"`` for CLAPP) per layer ``l = 1, 2, ...``.
    layouts : list of Layout, optional
        Each layer's connections and locations (:mod:`neuroplastic.rules.retinotopic`); default dense.
    """

    def __init__(self, sizes: list[int], rule: Rule | str, params: dict, layouts: list[Layout] | None = None):
        self.sizes = list(sizes)
        self.rule = RULES[rule] if isinstance(rule, str) else rule
        self.params = params
        self.layouts = layouts or dense_layouts(self.sizes)

    @classmethod
    def init(cls, sizes, rule, rng: np.random.Generator, *, dtype="float32",
             init_scale=1.0, pred_init_scale=0.1, layouts: list[Layout] | None = None) -> "ClappStack":
        """He-normal feed-forward weights; small random prediction (and retrodiction) weights."""
        rule = RULES[rule] if isinstance(rule, str) else rule
        layouts = layouts or dense_layouts(sizes)
        params = init_layout_params(layouts, rule.retro, rng, dtype=dtype, init_scale=init_scale,
                                    pred_init_scale=pred_init_scale)
        return cls(sizes, rule, params, layouts)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def features(self, x) -> list:
        """Rates of every layer for glimpses ``x`` (..., n_in)."""
        return stack_rates(self.params, x)

    def pair_sets(self, B: int, T: int, rng: np.random.Generator, negatives: int, saccade_prob: float):
        """Draw which pairs each layer learns from in one batch: shifts and weights (see clapp_sequences).

        CLAPP-s: the positive set (shift 0) and ``negatives`` sets of saccades,
        each to the same position of another image (a random non-zero shift).
        CLAPP: every step is a saccade with probability ``saccade_prob``,
        otherwise a fixation; one pair per step.
        """
        if B < 2:
            raise ValueError("[train] batch_size must be >= 2: a saccade goes to another image of the batch")
        scale = 1.0 / (B * (T - 1))
        if self.rule.pairing == "contrastive":
            shifts = [0] + [int(s) for s in rng.integers(1, B, size=negatives)]
            weights = np.full((len(shifts), B, T - 1), scale)
        else:
            saccade = rng.random((B, T - 1)) < saccade_prob
            shifts = [0, int(rng.integers(1, B))]
            weights = np.stack([~saccade, saccade]).astype(float) * scale
        return shifts, weights

    def train_batch(self, x, optimizer, shifts, weights) -> BatchStats:
        """One update of every layer from glimpse sequences ``x`` (B, T, n_in).

        ``x`` and the parameters are arrays of one namespace and device (numpy, torch, CuPy);
        ``weights``, drawn with numpy by :meth:`pair_sets`, are moved there once.
        """
        W = self.params["1/W"]
        xp = array_namespace(x, W)
        weights = xp.asarray(weights, dtype=x.dtype, device=array_device(W))
        grads, losses, modulated = {}, [], []
        active = weights > 0
        n_active = xp.sum(xp.astype(active, x.dtype))
        for l in range(self.n_layers):
            p = f"{l + 1}/"
            g = clapp_sequences(self.params[p + "W"], self.params[p + "W_pred"], x, shifts, weights,
                                W_retro=self.params.get(p + "W_retro"), layout=self.layouts[l])
            grads[p + "W"], grads[p + "W_pred"] = g.W, g.W_pred
            if g.W_retro is not None:
                grads[p + "W_retro"] = g.W_retro
            losses.append(g.loss)
            on = g.gamma != 0                         # retinotopic: per location, the fraction over locations
            local = on.ndim > active.ndim
            per_pair = active[..., None] if local else active
            locations = on.shape[-1] if local else 1
            modulated.append(xp.sum(xp.astype(per_pair & on, x.dtype)) / (n_active * locations))
            x = g.z                                   # input of the next layer, before this update
        optimizer.step(self.params, grads)
        stats = host_floats([*losses, *modulated])   # one device-to-host transfer per batch
        return BatchStats(stats[:self.n_layers], stats[self.n_layers:])
