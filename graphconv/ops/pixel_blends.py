"""The kernel of a score map placed on its image's pixels with MONAI's Gaussian
weights (`georef.CellPlacement.on_pixels`, blend="gaussian").

It lives here, with the network's kernels and their cache, rather than beside the
placement that calls it, as `area_means` does: defining a numba function sets up
numba's compiler for the whole process, after which `configure_process()` can no
longer choose how it compiles (graphconv/vector_width.py); graphconv.georef is imported
with every model, this module only when a map is blended so.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def weighted_means(scores, row_count, row_cell, row_weight, col_count, col_cell, col_weight, least, out):
    """Each pixel of `out` (N, K, H, W) the mean of the cells its row and column taps
    name (`row_count[y]` of `row_cell[y]`, `col_count[x]` of `col_cell[x]`), each cell
    weighted by its row weight times its column weight, at least `least`; summed in
    float64, a pixel row a job. A NaN cell (not computed) is NaN wherever it weighs in."""
    images, classes = scores.shape[0], scores.shape[1]
    for y in prange(out.shape[2]):
        sums = np.empty((images, classes))
        for x in range(out.shape[3]):
            sums[:] = 0.0
            total = 0.0
            for a in range(row_count[y]):
                for b in range(col_count[x]):
                    weight = max(row_weight[y, a] * col_weight[x, b], least)
                    total += weight
                    r, c = row_cell[y, a], col_cell[x, b]
                    for image in range(images):
                        for k in range(classes):
                            sums[image, k] += weight * scores[image, k, r, c]
            for image in range(images):
                for k in range(classes):
                    out[image, k, y, x] = sums[image, k] / total
