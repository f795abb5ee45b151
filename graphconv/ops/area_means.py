"""The kernels of a Downsampled source (graphconv/sources.py): each coarse pixel the
area-weighted mean of the fine pixels its square covers.

They live here, with the network's kernels, rather than beside the reader that calls
them: defining a numba function sets up numba's compiler for the whole process, after
which `configure_process()` can no longer choose how it compiles (512-bit vectors,
graphconv/vector_width.py). Importing graphconv.sources, as every Dask worker's task
does before it loads the model, must leave that choice open; this module is imported
only when a downsampled image is read.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def area_means(box, rows, row_weights, cols, col_weights, out):
    """out[c, i, j] = sum over column taps b of col_weights[b, j] * (sum over row taps a
    of row_weights[a, i] * box[c, rows[a, i], cols[b, j]]), summed in that order for
    every pixel. No fastmath: fused multiply-adds in the vector loop but not in its
    remainder would round a pixel differently by where a tile puts it."""
    channels, height, width = out.shape
    for job in prange(channels * height):
        c, i = job // height, job % height
        line = np.zeros(box.shape[2], np.float32)
        for a in range(rows.shape[0]):
            weight, row = row_weights[a, i], rows[a, i]
            for x in range(box.shape[2]):
                line[x] += weight * box[c, row, x]
        for j in range(width):
            total = np.float32(0.0)
            for b in range(cols.shape[0]):
                total += col_weights[b, j] * line[cols[b, j]]
            out[c, i, j] = total


@njit(cache=True, parallel=True)
def valid_area_means(box, missing, rows, row_weights, cols, col_weights, out, out_missing):
    """`area_means` of a box whose `missing` pixels ((h, w) of the box) are 0 in every
    channel: a pixel whose taps are all valid is summed exactly as there; one with
    missing taps is the weighted sum of the valid ones over their weight; one with none
    valid is missing (0; `out_missing`, (height, width), True)."""
    channels, height, width = out.shape
    for job in prange(channels * height):
        c, i = job // height, job % height
        line = np.zeros(box.shape[2], np.float32)
        valid_line = np.zeros(box.shape[2], np.float32)
        missing_line = np.zeros(box.shape[2], np.float32)
        for a in range(rows.shape[0]):
            weight, row = row_weights[a, i], rows[a, i]
            for x in range(box.shape[2]):
                line[x] += weight * box[c, row, x]
                if missing[row, x]:
                    missing_line[x] += weight
                else:
                    valid_line[x] += weight
        for j in range(width):
            total = np.float32(0.0)
            valid = np.float32(0.0)
            lost = np.float32(0.0)
            for b in range(cols.shape[0]):
                total += col_weights[b, j] * line[cols[b, j]]
                valid += col_weights[b, j] * valid_line[cols[b, j]]
                lost += col_weights[b, j] * missing_line[cols[b, j]]
            if lost == 0:
                out[c, i, j] = total
            elif valid > 0:
                out[c, i, j] = total / valid
            else:
                out[c, i, j] = 0.0
            if c == 0:
                out_missing[i, j] = lost != 0 and not valid > 0

