"""What the ops' `cuda.py` kernels share: the launch configuration (computed here only),
how a one-thread-per-element kernel finds its element, and `BoundLaunches`, a layer whose
launches are worked out once per set of arrays. Device plumbing (copies, allocation,
weights) is the CUDA backend's (`graphconv/backends.py`)."""
from __future__ import annotations

from typing import Any, Callable

from numba import config, cuda

THREADS = 256


@cuda.jit(device=True, inline=True)
def unravel_nchw(index, c, height, width):
    """(b, ch, y, x) of flat element `index` of an (N, c, height, width) array: how the
    one-thread-per-element kernels find their element. Pass c=1 for one thread per pixel."""
    x = index % width
    y = (index // width) % height
    ch = (index // (width * height)) % c
    return index // (width * height * c), ch, y, x


REDUCE_THREADS = 64  # threads of a block that sums a plane (`block_sum`); a power of two


@cuda.jit(device=True)
def block_sum(partial, value, t):
    """The sum of every thread's `value` over a block of REDUCE_THREADS threads, returned
    to all of them: thread `t` stores its value in the shared array `partial`, and the
    partial sums are halved in place. The kernel declares `partial`
    (cuda.shared.array(REDUCE_THREADS, float64)): numba makes shared arrays only there."""
    partial[t] = value
    cuda.syncthreads()
    step = REDUCE_THREADS // 2
    while step > 0:
        if t < step:
            partial[t] += partial[t + step]
        cuda.syncthreads()
        step //= 2
    total = partial[0]
    cuda.syncthreads()  # every thread has read it before a next sum overwrites it
    return total


def grid_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) covering n elements, one thread each."""
    return max(1, (n + THREADS - 1) // THREADS), THREADS


KernelCall = tuple[Any, tuple, tuple]  # a kernel, its launch configuration (grid, block) and its arguments


class BoundLaunches:
    """A layer bound to the GPU whose launches `launches(inputs, out)` works out: called,
    it works them out and launches them; `bind_values` works them out once for arrays
    the Executor keeps (its buffers), so later runs only launch. (numba-cuda's own
    per-launch Python remains; this saves the op's: parameter parsing, grid sizes,
    array views.)"""

    def __init__(self, launches: Callable[[list, Any], list[KernelCall]]):
        self.launches = launches

    def __call__(self, inputs: list, out) -> None:
        self.bind_values(inputs, out)()

    def bind_values(self, inputs: list, out) -> Callable[[], None]:
        launches = [(configured(kernel, configuration), args)
                    for kernel, configuration, args in self.launches(inputs, out)]

        def launch_all() -> None:
            for launch, args in launches:
                launch(*args)
        return launch_all


def configured(kernel, configuration: tuple) -> Callable:
    """`kernel[configuration]`, made once on a GPU. The simulator's `kernel[...]` sets the
    configuration on the kernel object itself and returns it, so a layer bound later
    with another grid would change an earlier one's launches: there it is made at
    each launch."""
    if config.ENABLE_CUDASIM:
        return lambda *args: kernel[configuration](*args)
    return kernel[configuration]
