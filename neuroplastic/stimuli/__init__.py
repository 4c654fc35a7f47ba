"""Stimuli: samples of any domain turned into glimpse sequences. Knows no engine."""
from .glimpses import GlimpseGrid, SaccadeStream, glimpse_grid, glimpses, saccade_stream, time_windows

__all__ = ["GlimpseGrid", "SaccadeStream", "glimpse_grid", "glimpses", "saccade_stream", "time_windows"]
