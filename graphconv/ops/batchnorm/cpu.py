"""CPU batchnorm: one parallel pass over memory, a multiply-add per element, over one
input or, stacked along channels, several (`graphconv.ops.channel_stack`, concat's
kernel, which normalises each channel as it copies it).

The per-channel scale gamma / sqrt(var + eps) is worked out in float64 (C numbers),
once per plan where the layer is bound; the kernel then computes
(x - mean) * scale + beta, subtracting the mean first so that a large mean does not
cost the small differences their precision."""
from __future__ import annotations

import numpy as np

from graphconv.ops.activations import fused_code
from graphconv.ops.batchnorm import channel_scale
from graphconv.ops.binding import BoundCall
from graphconv.ops.channel_stack import bind_stack, stack_channels


def run_batchnorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Stored as `out` is: NCHW, or channels-last (an input copied to match where it is not)."""
    stack_channels(inputs, out, _terms(params, weights), fused_code(params["activation"]))


def bind_batchnorm(params: dict, weights: dict) -> BoundCall:
    terms, activation = _terms(params, weights), fused_code(params["activation"])
    return BoundCall(lambda inputs, out: bind_stack(inputs, out, terms, activation))


def _terms(params: dict, weights: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, beta) per channel, float32, as the kernel takes them."""
    return (np.ascontiguousarray(weights["running_mean"], np.float32),
            channel_scale(params, weights).astype(np.float32),
            np.ascontiguousarray(weights["bias"], np.float32))
