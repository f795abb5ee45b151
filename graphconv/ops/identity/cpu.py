"""CPU identity: a copy of the input, since the output has a buffer of its own."""
from __future__ import annotations

import numpy as np


def run_identity(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    np.copyto(out, inputs[0])
