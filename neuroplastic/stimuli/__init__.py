"""Stimuli: samples turned into glimpse sequences. Knows no engine."""
from .glimpses import GlimpseGrid, SaccadeStream, glimpse_grid, saccade_stream

__all__ = ["GlimpseGrid", "SaccadeStream", "glimpse_grid", "saccade_stream"]
