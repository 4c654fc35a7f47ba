"""Simulation engines: one interface (:mod:`~neuroplastic.engines.base`), one training loop, found by name (:mod:`~neuroplastic.engines.registry`).

- :mod:`~neuroplastic.engines.numpy`: the rate reference; dense and conv CLAPP stacks, the two-view hinge encoders;
- :mod:`~neuroplastic.engines.brian`: the two-compartment network of ``models/`` in Brian2, rate or spiking, on the
  runtime, cpp_standalone or cuda_standalone device.

:mod:`~neuroplastic.engines.prepare` loads what every engine needs before a run directory exists.
"""
from .registry import ENGINES, get_engine

__all__ = ["ENGINES", "get_engine"]
