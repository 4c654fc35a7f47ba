"""Process-wide memory setting for training loops (an application's choice, so not made on import)."""
from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

_MALLOC_TUNED = False


def retain_freed_memory() -> None:
    """Let glibc keep freed blocks instead of handing them back to the kernel (once per process).

    A training step allocates a few dozen arrays of ~1 MB and frees them at its end. With glibc's
    default, dynamic thresholds the freed top of the heap is trimmed (or the block was mmap-ed), so
    the next step page-faults all of it in again: ~4000-7000 minor faults per step of the default
    benchmark network, 30-45 % of its time (measured in a VM, where faults are dear).
    Serving blocks up to 32 MiB from the heap and trimming only above 256 MiB removes the faults;
    the cost is that the process keeps (at most) its peak heap. Results are unchanged. Does nothing
    outside glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version                   # only glibc has it (musl's mallopt is a no-op anyway)
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)     # glibc's maximum for this setting on 64-bit
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)
