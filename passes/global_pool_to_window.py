"""Global average pooling -> a fixed window: the FC->CONV idea for ResNet-style classifiers.

A globalavgpool averages whatever map it gets, so on a larger image a ResNet would still
answer with one score. At the crop it was trained on, though, it averages an H x W map
(7 x 7 for ResNet at 224): exactly an avgpool with an H x W window and stride 1, which on
a larger image slides, giving one score per crop-sized window, a dense map whose stride
is the network's total stride. The crop size is the spec's input; shapes are inferred
for it.

That holds only while the pooled value flows on to the head alone. A squeeze-and-
excitation block (EfficientNet, MobileNetV3, RegNetY) multiplies its global average
back into the map it was pooled from: each crop rescales its own features by its own
averages, so one dense pass cannot equal the classifier on every crop, and no rewrite
of the pool makes it so. Such a network is refused here, naming the gate, and so is
one that normalises over whole maps (groupnorm), whose statistics a larger image changes.
"""
from graphconv.errors import GraphconvError
from graphconv.ir import Graph, Node
from graphconv.ops import get_op
from graphconv.params import normalize_params
from graphconv.pass_manager import register_pass
from graphconv.strides import CROPS_INSTEAD, refuse_whole_map_layers


@register_pass("global-pool-to-window",
               "rewrite each globalavgpool as an avgpool whose window is its input at the crop size",
               requires=("shapes",), preserves=("shapes",))
def global_pool_to_window(graph: Graph) -> bool:
    pools = graph.find("globalavgpool")
    if pools:
        refuse_whole_map_layers(graph)
    for pool in pools:
        _refuse_if_it_gates_a_map(graph, pool)
        _, h, w = pool.inputs[0].shape
        params = normalize_params(get_op("avgpool"), {"kernel_size": [h, w], "stride": 1})
        shape = pool.shape
        graph.set_shape(graph.replace(pool, "avgpool", params), shape)
    return bool(pools)


def _refuse_if_it_gates_a_map(graph: Graph, pool: Node) -> None:
    """Raise when a layer downstream of `pool` also reads a map larger than 1x1 at the
    crop that does not come through `pool`: there the whole crop's average meets
    per-position features (a squeeze-and-excitation gate)."""
    downstream = graph.downstream(pool)
    through_pool = {pool.name, *(layer.name for layer in downstream)}
    for layer in downstream:
        for other in layer.inputs:
            if other.name not in through_pool and other.shape[1:] != (1, 1):
                raise pool.error(
                    f"this global average pool feeds layer '{layer.name}' ({layer.op}), which also reads "
                    f"the {'x'.join(map(str, other.shape))} map '{other.name}': a squeeze-and-excitation "
                    "gate, where each crop rescales its own features by its own averages. No single dense "
                    "pass equals the classifier on every crop of such a network, so it cannot be compiled "
                    f"to slide; {CROPS_INSTEAD}", GraphconvError)
