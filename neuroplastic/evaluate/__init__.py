"""Evaluation on arrays of features: linear probes per layer, representational similarity (CKA). Knows no engine."""
from .layers import chosen_layers, probe_layers
from .probe import linear_probe, pool_glimpses, stratified_split
from .similarity import linear_cka

__all__ = ["chosen_layers", "linear_cka", "linear_probe", "pool_glimpses", "probe_layers", "stratified_split"]
