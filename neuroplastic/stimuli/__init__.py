"""Stimuli: samples turned into glimpse sequences. Knows no engine."""
from .glimpses import GlimpseGrid, glimpse_grid

__all__ = ["GlimpseGrid", "glimpse_grid"]
