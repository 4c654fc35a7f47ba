"""Evaluation on arrays of features: linear probes per layer. Knows no engine."""
from .layers import chosen_layers, probe_layers
from .probe import linear_probe, pool_glimpses, stratified_split

__all__ = ["chosen_layers", "linear_probe", "pool_glimpses", "probe_layers", "stratified_split"]
