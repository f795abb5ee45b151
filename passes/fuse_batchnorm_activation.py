"""Fold the activation after a batchnorm that stays a layer (one after a concat or a
pooling: DenseNet's and pre-activation ResNets' BN-ReLU) into the batchnorm, whose
kernel applies it as it writes: a pass over the map in memory saved. Run after
fold-batchnorm, which folds the batchnorms after convs, and their activations with them."""
from graphconv.ir import Graph
from graphconv.ops.activations import fused_activation_names
from graphconv.pass_manager import register_pass
from .fuse_conv_activation import fold_activations_into


@register_pass("fuse-batchnorm-activation", f"fold a {fused_activation_names()} into the batchnorm before it", preserves=("shapes",))
def fuse_batchnorm_activation(graph: Graph) -> bool:
    return fold_activations_into(graph, "batchnorm")
