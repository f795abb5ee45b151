"""Let a batchnorm after a concat read the concat's inputs itself, so that the
concatenation is never written out.

DenseNet's pre-activation layers normalise the concatenation of every feature map
before them: concat, batchnorm, ReLU, each a full pass over a map of up to 1024
channels, 58 times in DenseNet-121. Normalising each channel as it is copied gives the
same numbers in one pass (the batchnorm's kernel takes several inputs and stacks them,
`graphconv.ops.channel_stack`); with `fuse-batchnorm-activation` the ReLU goes into that
pass too. Only a concat that nothing else reads, and that is not the network's output,
is absorbed."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("fuse-concat-batchnorm", "let a batchnorm read the inputs of the concat before it "
               "(one pass: the concatenation is never written)", preserves=("shapes",))
def fuse_concat_batchnorm(graph: Graph) -> bool:
    fused = False
    for concat, norm in graph.match_chain(["concat", "batchnorm"]):
        graph.set_inputs(norm, concat.inputs)
        graph.remove(concat)
        fused = True
    return fused
