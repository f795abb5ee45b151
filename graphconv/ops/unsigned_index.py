"""`unsigned(i)`: an array index numba need not check for being negative.

numba indexes like Python: a negative index counts from the end, so every access with a
signed integer carries a compare-and-add. Where LLVM cannot prove the index is never
negative (any index built from a loop bound or an offset passed in), that select stays
in the loop and stops it from being vectorised. The same index cast to an unsigned
integer has no such meaning and compiles to a plain load or store: im2col's row copies
ran 7x faster (0.58 -> 0.08 ms for AlexNet conv3's 1728 x 169 columns).

Use it only on an index that is in range: like boundscheck=False, it trusts the caller.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def unsigned(index):
    return np.uintp(index)
