"""Model files (``models/*.toml``): neuron definitions the engines read.

A model file is text a scientist edits: the neuron's kind, variant, nonlinearity
and its equations (Brian2 syntax, one unit per line). Errors name the file and key.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelError", "NeuronModel", "load_model", "NONLINEARITIES"]

#: Somatic nonlinearities the numpy engine implements.
NONLINEARITIES = ("relu",)


class ModelError(ValueError):
    """A model file that cannot be used, with the file and key in the message."""


@dataclass(frozen=True)
class NeuronModel:
    """A parsed neuron model file."""

    path: Path
    variant: str
    nonlinearity: str
    description: str
    equations: str


def load_model(path: str | Path) -> NeuronModel:
    """Read and check a neuron model file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ModelError(f"{path}: cannot read model file: {err}") from None

    def get(key, allowed=None):
        if key not in raw:
            raise ModelError(f"{path}: key {key!r} is missing")
        value = raw[key]
        if not isinstance(value, str) or (allowed and value not in allowed):
            want = f"one of {', '.join(map(repr, allowed))}" if allowed else "a string"
            raise ModelError(f"{path}: {key} = {value!r}: must be {want}")
        return value

    if get("kind", ("neuron",)) != "neuron":  # pragma: no cover - get() already checked
        raise ModelError(f"{path}: not a neuron model")
    return NeuronModel(path, get("variant", ("rate", "spiking")), get("nonlinearity", NONLINEARITIES),
                       raw.get("description", ""), get("equations"))
