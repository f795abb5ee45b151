"""CPU broadcast: numpy's broadcasting assignment, one pass over the output in whichever
order it is stored (NCHW or channels-last); the second input is not read."""
from __future__ import annotations

import numpy as np


def run_broadcast(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    out[...] = inputs[0]
