"""Where the rate engine's arrays live: numpy, torch or CuPy, on the CPU or a CUDA GPU.

The rules (``neuroplastic.rules``) and the stacks and optimisers of this engine are written once,
against the array API (``array_api_compat``): they compute in the namespace and on the device of the
arrays they are given. This module is the one place that chooses those arrays (``[engine] array``,
``[engine] device``): weights are drawn with the run's numpy generator as always (so every back end
starts from the same numbers) and moved once; each batch is moved as it is cut; results come back
to numpy only for checkpoints, metrics and the probe.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, to_device
from array_api_compat import device as array_device

from ...errors import ProtocolError

__all__ = ["ARRAYS", "Backend", "backend", "host_floats"]

#: ``[engine] array`` -> the module that must be importable, and how to install it.
ARRAYS = {
    "numpy": ("numpy", "a dependency of neuroplastic"),
    "torch": ("torch", "pip install 'neuroplastic[torch]' (the CPU build), or a CUDA build from pytorch.org"),
    "cupy": ("cupy", "pip install cupy-cuda12x (or the build for your CUDA version)"),
}


def host_floats(values: list) -> list[float]:
    """Scalars of any back end (0-d arrays, or floats) as Python floats, brought to the host in one transfer.

    A batch's metrics (each layer's loss and modulated fraction) are computed on the device; reading
    each with ``float()`` would make a GPU wait once per value, this once per batch.
    """
    arrays = [v for v in values if not isinstance(v, (int, float))]
    if not arrays:
        return [float(v) for v in values]
    xp = array_namespace(*arrays)
    dev = array_device(arrays[0])
    stacked = xp.stack([xp.reshape(xp.asarray(v, dtype=xp.float64, device=dev), ()) for v in values])
    return [float(v) for v in np.asarray(to_device(stacked, "cpu"))]


@dataclass(frozen=True)
class Backend:
    """An array library and a device: ``xp`` is its array-API namespace, ``device`` its native device."""

    name: str
    where: str
    xp: Any
    device: Any

    def asarray(self, a):
        """``a`` (numpy) as an array of this back end, of the same dtype, on its device (numpy: ``a`` itself)."""
        if self.name == "numpy":
            return np.asarray(a)
        return self.xp.asarray(a, device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        """An array of this back end as a numpy array (a copy in host memory unless it is numpy already)."""
        if isinstance(a, np.ndarray) or self.name == "numpy":
            return np.asarray(a)
        if self.name == "torch":
            return a.detach().cpu().numpy()
        return importlib.import_module("cupy").asnumpy(a)

    def params(self, params: dict) -> dict:
        """A dict of numpy arrays (weights, optimiser state) moved to this back end, keys unchanged."""
        return {k: self.asarray(v) if isinstance(v, np.ndarray) else v for k, v in params.items()}

    def numpy(self, params: dict) -> dict:
        """A dict of this back end's arrays as numpy arrays (for checkpoints); other values unchanged."""
        return {k: v if np.isscalar(v) else self.to_numpy(v) for k, v in params.items()}


def backend(protocol, running: bool = True) -> Backend:
    """The back end a rate protocol asks for, or a :class:`~neuroplastic.errors.ProtocolError` that says why
    it cannot have it (a library that is not installed, a GPU that is not there, numpy on a GPU).

    ``running=False`` checks only what the protocol says, not this machine (validation, ``--build-only``).
    """
    section = protocol.engine
    name, where = section.array, section.device
    module, install = ARRAYS[name]
    if name == "numpy" and where != "cpu":
        raise ProtocolError(protocol.source, "engine.device", f"= {where!r}: numpy arrays live in host memory; "
                            "for a GPU choose [engine] array = 'torch' or 'cupy'; allowed with numpy: 'cpu'")
    if name == "cupy" and where != "cuda":
        raise ProtocolError(protocol.source, "engine.device", f"= {where!r}: CuPy arrays live on a GPU; allowed "
                            "with cupy: 'cuda' (for the CPU choose array = 'numpy' or 'torch')")
    if not running:
        return Backend(name, where, None, None)
    try:
        lib = importlib.import_module(module)
    except ImportError:
        raise ProtocolError(protocol.source, "engine.array", f"= {name!r}: {module} is not installed ({install}); "
                            f"allowed: {', '.join(repr(a) for a in ARRAYS)}") from None
    from array_api_compat import array_namespace

    if name == "numpy":
        return Backend(name, where, array_namespace(np.empty(0)), "cpu")
    if name == "torch":
        if where == "cuda" and not lib.cuda.is_available():
            raise ProtocolError(protocol.source, "engine.device", "= 'cuda': torch sees no CUDA GPU here (a CPU "
                                "build, or no driver); allowed on this machine: 'cpu'")
        device = lib.device(where)
        return Backend(name, where, array_namespace(lib.empty(0, device=device)), device)
    try:
        count = lib.cuda.runtime.getDeviceCount()
    except Exception:                                  # CuPy raises its own CUDA errors when no driver is found
        count = 0
    if count < 1:
        raise ProtocolError(protocol.source, "engine.device", "= 'cuda': CuPy finds no CUDA GPU here; on this "
                            "machine choose array = 'numpy' or 'torch' with device = 'cpu'")
    device = lib.cuda.Device()
    return Backend(name, where, array_namespace(lib.empty(0)), device)
