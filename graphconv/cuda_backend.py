"""CUDA device plumbing shared by the ops' `cuda.py` kernels.

Activations stay on the device for a whole run (one copy in, one copy out); weights
are uploaded once per Executor. Launch configurations are computed here only.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

THREADS = 256


def to_device(x: np.ndarray):
    return cuda.to_device(np.ascontiguousarray(x, dtype=np.float32))


def to_host(x) -> np.ndarray:
    return x.copy_to_host()


def synchronize() -> None:
    cuda.synchronize()


def upload_weights(weights: dict[str, np.ndarray]) -> dict:
    return {key: to_device(array) for key, array in weights.items()}


def empty(shape):
    return cuda.device_array(shape, dtype=np.float32)


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


def zeros_like_bias(n: int):
    return to_device(np.zeros(n, np.float32))
