"""Fold an inference batchnorm into the conv (or fc) before it: one layer instead of two.

A batchnorm in eval mode is y = x * s + t per channel, s = gamma / sqrt(var + eps) and
t = beta - mean * s. When x is a conv's output, x = W * input + b, so
y = (s W) * input + (s b + t): the same conv with each output channel's filter scaled
by s and its bias replaced by (b - mean) * s + beta. That is exact arithmetic, computed
here in float64 and stored in float32, so the network's output changes only by float32
rounding, and the batchnorm's pass over memory disappears.

Only a batchnorm whose one input is a conv or fc that nothing else reads is folded:
another reader of the conv needs its unnormalised output. A batchnorm after a concat
or a pooling (DenseNet's pre-activation blocks), or after a conv with a fused ReLU,
stays a layer and its own kernel runs it. A batchnorm's own activation (an extension
that `fuse-batchnorm-activation` sets) moves onto the conv with it.

A groupnorm or layernorm ends in its own per-channel weight and bias, so a batchnorm
after one folds into those the same way (the exporters write GroupNorm's affine as a Mul
and an Add, which the ONNX importer makes identity-statistics batchnorms).
"""
import numpy as np

from graphconv.errors import GraphconvError
from graphconv.ir import Graph, Node
from graphconv.ops.batchnorm import scale_and_shift
from graphconv.pass_manager import register_pass


@register_pass("fold-batchnorm",
               "fold a batchnorm into the conv, fc, groupnorm or layernorm before it (exact new weight and bias)",
               preserves=("shapes",))
def fold_batchnorm(graph: Graph) -> bool:
    folded = False
    while _fold_each_chain(graph):  # again: a second batchnorm (GroupNorm's Mul, then its Add) now follows
        folded = True
    return folded


def _fold_each_chain(graph: Graph) -> bool:
    folded = False
    for producer in ("conv", "fc", "groupnorm", "layernorm"):
        for layer, norm in graph.match_chain([producer, "batchnorm"]):
            if layer.op == "conv" and (layer.params["activation"] != "none" or len(layer.inputs) > 1):
                continue  # the ReLU, or the residual added, sits between the conv and the batchnorm
            if layer.op != "conv" and norm.params["activation"] != "none":
                continue  # only a conv applies an activation
            activation = norm.params["activation"]
            _fold(graph, layer, norm)
            if activation != "none":
                graph.set_params(layer, activation=activation)  # the conv applies it now
            folded = True
    return folded


def _fold(graph: Graph, layer: Node, norm: Node) -> None:
    """Scale `layer`'s filters and rewrite its bias so it computes norm(layer(x)), then
    bypass `norm`: its users (and the graph output) read `layer`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scale, shift = scale_and_shift(norm.params, norm.weights)
    if not np.isfinite(scale).all():
        var = np.asarray(norm.weights["running_var"], np.float64)
        raise norm.error(f"running_var + eps must be positive to fold into '{layer.name}' (smallest: "
                         f"{float(np.min(var + norm.params['eps']))}): these are not a batchnorm's "
                         "statistics", GraphconvError)
    weight = np.asarray(layer.weights["weight"], np.float64)
    weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))  # one factor per output channel
    bias = np.asarray(layer.weights["bias"], np.float64) if "bias" in layer.weights else 0.0
    if not layer.params.get("bias", True):
        graph.set_params(layer, bias=True)
    graph.set_weights(layer, weight=weight.astype(np.float32), bias=(bias * scale + shift).astype(np.float32))
    graph.remove(norm)
