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

A batchnorm that nothing folds into from before, and that only an fc reads, folds into
that fc instead: fc(s x + t) = (W diag s) x + (W t + b). This is what lets a classifier
head slide: a per-feature scale and shift after a Flatten (BatchNorm1d in fastai's head and
many others, or a Mul/Add by a vector of C*H*W constants, both of which the importer makes
a batchnorm over the C*H*W features of one cell) would otherwise stand between the
flatten and the fc, so remove-flatten could not drop the flatten, and on a larger image the
batchnorm would meet a map whose channels are not its features. Folded, the flatten feeds
the fc alone. Only into an fc: a conv pads, and a shift inside its padding is not the
shift of its input.
"""
import numpy as np

from graphconv.errors import GraphconvError
from graphconv.ir import Graph, Node
from graphconv.ops.batchnorm import scale_and_shift
from graphconv.pass_manager import register_pass


@register_pass("fold-batchnorm",
               "fold a batchnorm into the conv, fc, groupnorm or layernorm before it, or the fc after it (exact new weight "
               "and bias)",
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
    for norm, fc in graph.match_chain(["batchnorm", "fc"]):
        if len(norm.inputs) == 1 and norm.params["activation"] == "none":
            _fold_into_fc(graph, norm, fc)
            folded = True
    return folded


def _fold(graph: Graph, layer: Node, norm: Node) -> None:
    """Scale `layer`'s filters and rewrite its bias so it computes norm(layer(x)), then
    bypass `norm`: its users (and the graph output) read `layer`."""
    scale, shift = _finite_scale_and_shift(norm, layer)
    weight = np.asarray(layer.weights["weight"], np.float64)
    weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))  # one factor per output channel
    bias = np.asarray(layer.weights["bias"], np.float64) if "bias" in layer.weights else 0.0
    if not layer.params.get("bias", True):
        graph.set_params(layer, bias=True)
    graph.set_weights(layer, weight=weight.astype(np.float32), bias=(bias * scale + shift).astype(np.float32))
    graph.remove(norm)


def _finite_scale_and_shift(norm: Node, into: Node) -> tuple[np.ndarray, np.ndarray]:
    """`norm`'s per-channel y = s x + t in float64, refused (naming `into`) where its
    statistics have no real square root: folded, the NaN would spread to every output."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scale, shift = scale_and_shift(norm.params, norm.weights)
    if not np.isfinite(scale).all():
        var = np.asarray(norm.weights["running_var"], np.float64)
        raise norm.error(f"running_var + eps must be positive to fold into '{into.name}' (smallest: "
                         f"{float(np.min(var + norm.params['eps']))}): these are not a batchnorm's "
                         "statistics", GraphconvError)
    return scale, shift


def _fold_into_fc(graph: Graph, norm: Node, fc: Node) -> None:
    """Rewrite `fc` so it computes fc(norm(x)) from x, then bypass `norm`. The fc reads
    its input flattened in C, H, W order, so each channel's factor covers its H x W
    features (one each after a flatten, whose C*H*W features are channels of one cell)."""
    scale, shift = _finite_scale_and_shift(norm, fc)
    weight = np.asarray(fc.weights["weight"], np.float64)
    per_feature = weight.shape[1] // scale.size
    scale, shift = np.repeat(scale, per_feature), np.repeat(shift, per_feature)
    bias = np.asarray(fc.weights["bias"], np.float64) if "bias" in fc.weights else 0.0
    if not fc.params.get("bias", True):
        graph.set_params(fc, bias=True)
    graph.set_weights(fc, weight=(weight * scale).astype(np.float32),
                      bias=(bias + weight @ shift).astype(np.float32))
    graph.remove(norm)
