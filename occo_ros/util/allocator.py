"""Keep glibc from returning every freed image buffer to the kernel.

With glibc's defaults, arrays above 128 KiB are mmap'ed and unmapped on free, so every
frame's temporaries fault their pages in again: ~2000 page faults and ~2 ms per pair at
640x512 (measured by bench/bench_node_overhead.py). Raising the mmap and trim thresholds
lets the heap reuse those pages. Memory stays bounded: the same few frame-sized buffers are
reused, and up to 256 MiB of free heap is kept instead of trimmed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Apply the thresholds once per process; False where the C library is not glibc."""
    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 64 << 20)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                      256 << 20))
