"""Random test problems shared by the tests and benchmarks (as ``numpy.testing`` serves numpy's)."""
from __future__ import annotations

import numpy as np

__all__ = ["random_problem"]


def random_problem(sizes: list[int], length: int, rule: str = "clapp_s", seed: int = 0, *,
                   offset: float = 0.0, pred_init_scale: float = 1.0):
    """Initial weights of a CLAPP stack and a random glimpse stream: ``(params, x, y)``.

    ``x`` (length, sizes[0]) is uniform in [0, 1); ``y`` is a fair coin of fixations (+1) and saccades (-1)
    with ``y[0] = 0`` (no context yet). ``offset / fan_in`` is added to every feed-forward weight, so that
    most units are active on positive inputs (spiking networks need some drive to fire). float64.
    """
    from .rate.network import ClappStack

    rng = np.random.default_rng(seed)
    params = ClappStack.init(sizes, rule, rng, dtype="float64", pred_init_scale=pred_init_scale).params
    for l in range(len(sizes) - 1):
        params[f"{l}/W"] = params[f"{l}/W"] + offset / sizes[l]
    x = rng.random((length, sizes[0]))
    y = np.where(rng.random(length) < 0.5, -1.0, 1.0)
    y[0] = 0.0
    return params, x, y
