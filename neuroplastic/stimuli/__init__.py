"""Stimuli: samples of any domain turned into glimpse sequences (or patch grids). Knows no engine."""
from .glimpses import (GlimpseGrid, PatchGrids, SaccadeStream, glimpse_grid, glimpse_sequences, on_off, patch_grid,
                       saccade_stream, scan_positions, time_windows)

__all__ = ["GlimpseGrid", "PatchGrids", "SaccadeStream", "glimpse_grid", "glimpse_sequences", "on_off", "patch_grid",
           "saccade_stream", "scan_positions", "time_windows"]
