"""Process-level memory setting for the CPU runs (no torch import, so `--help` stays instant)."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc serve large blocks from the heap and keep freed memory (process-wide: called by the
    caption script and the demo when run as programs, not on import). The (rows x 49,408) logits of the
    caption stage exceed glibc's largest mmap threshold, so every step otherwise maps fresh pages and
    zero-faults them (25 of the old demo's 167 CPU-s were system time). Returns whether the setting was
    applied (False on non-glibc platforms, where nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):  # glibc only
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
