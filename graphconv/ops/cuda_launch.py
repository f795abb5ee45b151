"""What the ops' `cuda.py` kernels share: the launch configuration (computed here only)
and how a one-thread-per-element kernel finds its element. Device plumbing (copies,
allocation, weights) is the CUDA backend's (`graphconv/backends.py`)."""
from __future__ import annotations

from numba import cuda

THREADS = 256


@cuda.jit(device=True, inline=True)
def unravel_nchw(index, c, height, width):
    """(b, ch, y, x) of flat element `index` of an (N, c, height, width) array: how the
    one-thread-per-element kernels find their element. Pass c=1 for one thread per pixel."""
    x = index % width
    y = (index // width) % height
    ch = (index // (width * height)) % c
    return index // (width * height * c), ch, y, x


def grid_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) covering n elements, one thread each."""
    return max(1, (n + THREADS - 1) // THREADS), THREADS
