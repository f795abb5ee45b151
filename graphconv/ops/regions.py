"""The flood fill that finds the regions of one class on a best-class picture
(`images._regions`: each region named at its middle).

It lives here, with the network's kernels, rather than beside the drawing that calls
it (as graphconv/ops/area_means.py explains): defining a numba function sets numba's
compiler up for the whole process, which must wait for `configure_process()`, and the
kernels here are routed to graphconv's kernel cache (graphconv/kernel_cache.py). A
module-level njit in graphconv.images, imported by every Dask worker, made a cluster's
maps differ from a local run's in their last bits.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def label_regions(best):
    """(rows, cols) int64: the number of each cell's 4-connected region of one value, the
    regions numbered in the order of their first cells (row order). Compiled: a slide's
    best-class picture has millions of cells (a Python flood fill took 10 s for 4M)."""
    rows, cols = best.shape
    labels = np.full((rows, cols), -1, np.int64)
    stack = np.empty(rows * cols, np.int64)
    count = 0
    for start in range(rows * cols):
        r0, c0 = start // cols, start % cols
        if labels[r0, c0] >= 0:
            continue
        value = best[r0, c0]
        labels[r0, c0] = count
        stack[0], depth = start, 1
        while depth:
            depth -= 1
            r, c = stack[depth] // cols, stack[depth] % cols
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nr < rows and 0 <= nc < cols and labels[nr, nc] < 0 and best[nr, nc] == value:
                    labels[nr, nc] = count
                    stack[depth] = nr * cols + nc
                    depth += 1
        count += 1
    return labels
