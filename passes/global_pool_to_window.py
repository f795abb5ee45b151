"""Global average pooling -> a fixed window: the FC->CONV idea for ResNet-style classifiers.

A globalavgpool averages whatever map it gets, so on a larger image a ResNet would still
answer with one score. At the crop it was trained on, though, it averages an H x W map
(7 x 7 for ResNet at 224): exactly an avgpool with an H x W window and stride 1, which on
a larger image slides, giving one score per crop-sized window, a dense map whose stride
is the network's total stride. The crop size is the spec's input; shapes are inferred
for it.
"""
from graphconv.ir import Graph
from graphconv.ops import get_op
from graphconv.params import normalize_params
from graphconv.pass_manager import register_pass


@register_pass("global-pool-to-window",
               "rewrite each globalavgpool as an avgpool whose window is its input at the crop size",
               requires=("shapes",), preserves=("shapes",))
def global_pool_to_window(graph: Graph) -> bool:
    pools = graph.find("globalavgpool")
    for pool in pools:
        _, h, w = pool.inputs[0].shape
        params = normalize_params(get_op("avgpool"), {"kernel_size": [h, w], "stride": 1})
        shape = pool.shape
        graph.set_shape(graph.replace(pool, "avgpool", params), shape)
    return bool(pools)
