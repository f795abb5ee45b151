"""Global average pooling -> a fixed window: the FC->CONV idea for ResNet-style classifiers.

A globalavgpool averages whatever map it gets, so on a larger image a ResNet would still
answer with one score. At the crop it was trained on, though, it averages an H x W map
(7 x 7 for ResNet at 224): exactly an avgpool with an H x W window and stride 1, which on
a larger image slides, giving one score per crop-sized window, a dense map whose stride
is the network's total stride. The crop size is the spec's input; shapes are inferred
for it.

A pooling window that covers its whole input at the crop is a global pool written
another way: TorchScript writes AdaptiveMaxPool2d(1) as a 10x10 MaxPool of stride 10,
CIFAR ResNets end in F.avg_pool2d(x, 4). At the crop it makes one cell whatever its
stride; on a larger image its stride would make the map that much coarser than the
network's (10x for the first, and fastai's AdaptiveConcatPool2d, an average pool of
stride 1 beside that max pool, would merge maps of different strides). Its stride
becomes 1, as fc-to-conv gives the fc layers: each cell is still the classifier on
the crop at its offset.

All that holds only while the pooled value flows on to the head alone. A squeeze-and-
excitation block (EfficientNet, MobileNetV3, RegNetY) multiplies its global average
back into the map it was pooled from: each crop rescales its own features by its own
averages, so one dense pass cannot equal the classifier on every crop, and no rewrite
of the pool makes it so. Such a network is refused here, naming the gate, and so is
one that normalises over whole maps (groupnorm), whose statistics a larger image changes.
A segmentation network is left as it is (its output is per pixel of the whole image,
not per crop).
"""
from graphconv.errors import GraphconvError
from graphconv.ir import Graph, Node
from graphconv.ops import get_op
from graphconv.params import normalize_params
from graphconv.pass_manager import register_pass
from graphconv.strides import CROPS_INSTEAD, refuse_whole_map_layers


@register_pass("global-pool-to-window",
               "rewrite each globalavgpool as an avgpool whose window is its input at the crop size, "
               "and give a strided pool whose window is its whole input stride 1",
               requires=("shapes",), preserves=("shapes",))
def global_pool_to_window(graph: Graph) -> bool:
    """Nothing for a segmentation network: its global pools (DeepLabV3's image pooling,
    LR-ASPP's gate) are over the whole image by design, as PyTorch runs it, so it runs
    whole (its tiles are refused, `tiling._check_slides`)."""
    if graph.meta.get("task") == "segmentation":
        return False
    pools = graph.find("globalavgpool")
    windows = _strided_whole_map_windows(graph)
    if pools or windows:
        refuse_whole_map_layers(graph)
    for pool in pools:
        _refuse_if_it_gates_a_map(graph, pool)
        _, h, w = pool.inputs[0].shape
        params = normalize_params(get_op("avgpool"), {"kernel_size": [h, w], "stride": 1})
        shape = pool.shape
        graph.set_shape(graph.replace(pool, "avgpool", params), shape)
    for pool in windows:
        _refuse_if_it_gates_a_map(graph, pool)
        graph.set_params(pool, stride=(1, 1))
    return bool(pools or windows)


def _strided_whole_map_windows(graph: Graph) -> list[Node]:
    """The max and average pools of stride above 1 whose one unpadded, undilated window
    covers their whole input at the crop (module docstring). Not a 1x1 window, which
    pools nothing: a subsample, as keep-crop-cells appends to a 1x1 map at the crop to
    keep every k-th cell on a larger image (a compiled folder compiled again, by verify)."""
    return [pool for pool in graph.find("maxpool") + graph.find("avgpool")
            if pool.params["stride"] != (1, 1) and pool.params["kernel_size"] != (1, 1)
            and pool.params["padding"] == (0, 0)
            and pool.params["dilation"] == (1, 1) and pool.params["kernel_size"] == pool.inputs[0].shape[1:]]


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
