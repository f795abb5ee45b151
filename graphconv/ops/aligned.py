"""Cache-line-aligned float32 arrays for the operands the CPU tiles load as vectors.

Why: glibc's malloc aligns a block to 16 bytes only, and graphconv keeps every large
block on the heap (`graphconv.allocator`), so a numpy array of any size usually starts
16 or 48 bytes into a cache line. The register tiles of `vector_tile` load their
vector operand 8 floats (32 bytes) at a time at multiples of 32 bytes from the
array's start: on such an array every other load straddles two cache lines. Measured
on one Zen 3 core, operands in L1, alternating: the "stream" tile (2 x 5 vectors, five
vector loads per step) 70 -> 75.5 GFLOP/s with its operand 32-byte aligned; the
"outer" tile (three vector loads per step) level. ResNet-50 at 224 with its packed
weights and activation buffers aligned: 2-4% faster in two alternating in-process
runs (a third was too noisy to tell).

Arrays numba allocates inside kernels (`np.empty` in a jitted function: the stream
strategy's patch columns, the tiles' sums) are already 32-byte aligned.
"""
from __future__ import annotations

import math

import numpy as np

ALIGNMENT = 64  # bytes: one cache line, so a vector at a multiple of 32 bytes never straddles two


def empty(shape: int | tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous float32 array whose data starts on a cache line."""
    count = math.prod(shape) if isinstance(shape, tuple) else int(shape)  # np.prod costs microseconds
    raw = np.empty(count * 4 + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + count * 4].view(np.float32).reshape(shape)


def zeros(shape: int | tuple[int, ...]) -> np.ndarray:
    """As `empty`, zero-filled."""
    array = empty(shape)
    array.fill(0.0)
    return array


def is_aligned(array: np.ndarray) -> bool:
    """Whether the array's data starts on a cache line (an empty one has none to load)."""
    return array.size == 0 or array.ctypes.data % ALIGNMENT == 0
