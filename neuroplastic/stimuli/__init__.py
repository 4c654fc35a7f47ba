"""Stimuli: samples of any domain turned into glimpse sequences. Knows no engine."""
from .glimpses import (GlimpseGrid, SaccadeStream, glimpse_grid, glimpse_sequences, saccade_stream, scan_positions,
                       time_windows)

__all__ = ["GlimpseGrid", "SaccadeStream", "glimpse_grid", "glimpse_sequences", "saccade_stream", "scan_positions",
           "time_windows"]
