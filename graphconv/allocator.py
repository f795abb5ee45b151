"""Keep freed memory in the process, so each run's activations cost no page faults.

The runtime keeps its activation buffers between runs, but each run still allocates
its output and the kernels' scratch (im2col columns, padded copies), and large ones
(VGG's first layers' at 384x384 are tens of MB) are handed out by glibc as fresh
mmap'd pages and returned to the OS when freed. The next run then touches brand-new pages, and the kernel zero-fills each one
on first write: measured on 2 cores, writing a fresh 38 MB array took 13.6 ms against
1.8 ms for a reused one. Telling glibc never to mmap and never to trim makes freed
blocks go back to its heap, where the next run finds them already mapped (2.0 ms).

The process's resident memory then stays at its high-water mark instead of falling
between runs; the peak itself does not grow (benchmarks/README.md, memory) while runs
keep their sizes. When a larger input makes the runtime replace its buffers by larger
ones, the old ones and the scratch of the smaller runs would stay resident beside
them, a ratchet: VGG-16 over 11 photos of 560 to 800 pixels peaked at 2035 MB against
1597 MB for the 800-pixel photo alone. So the runtime then hands the heap's free pages
back (`release_freed_memory`), once per growth, and the next runs reuse the new ones.
GRAPHCONV_KEEP_MEMORY=0 turns this off. Other C libraries than glibc are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
NEVER_TRIM = 2 ** 31 - 1

_applied: bool | None = None
_malloc_trim = None  # glibc's, found once by `_configure_glibc` (find_library runs ldconfig)


def keep_freed_memory() -> bool:
    """Configure glibc's malloc as above, once per process; True if it was applied."""
    global _applied
    if _applied is None:
        _applied = _configure_glibc() if os.environ.get("GRAPHCONV_KEEP_MEMORY", "1") != "0" else False
    return _applied


def release_freed_memory() -> None:
    """Give the pages of every free block of glibc's heaps (all arenas: numba's threads
    allocate in their own) back to the OS (malloc_trim), where `keep_freed_memory`
    applied: the blocks stay the allocator's, and cost a page fault per page when used
    again."""
    if _applied and _malloc_trim is not None:
        _malloc_trim(0)


def _configure_glibc() -> bool:
    global _malloc_trim
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _malloc_trim = getattr(libc, "malloc_trim", None)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
