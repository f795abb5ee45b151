"""Keep only the cells that are crops, where a classifier makes its map finer than its
strides let it slide.

A classifier that upsamples after a strided layer (a nearest or bilinear upsample, a
pixel shuffle, a ConvTranspose, an HRNet-style fusion of an upsampled coarse branch)
has an output stride finer than the lattice its strided layers sample the image on:
sliding it gives a map at the fine stride, but only every k-th cell is the classifier
on its crop, the cells between being the network on no crop of the image
(`graphconv.receptive.sliding_periods`). This pass appends a layer that keeps every
k-th cell (a 1x1 max pool of stride k: a plain subsample), so the map holds crops only
and its stride says so; `--output-stride` with shift-and-stitch then gives finer exact
maps. A segmentation network, whose output is per pixel of the whole image rather than
per crop, is left alone.
"""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass
from graphconv.receptive import crop_cell_step
from graphconv.strides import sliding_pass


@register_pass("keep-crop-cells", "subsample a map made finer than the network's strides let it slide "
               "(an upsample after a strided layer) to the cells that are crops", requires=("shapes",))
def keep_crop_cells(graph: Graph) -> bool:
    """Append the subsample where the output's period is a multiple of its stride; nothing
    for a segmentation network (per pixel of the whole image) or a classifier whose fc,
    flatten or global pool still sees the whole crop (it does not slide yet)."""
    if graph.meta.get("task") == "segmentation" or any(sliding_pass(node) for node in graph.layers()):
        return False
    step = crop_cell_step(graph)
    if step == (1, 1):
        return False
    output = graph.output
    graph.insert_after(output, graph.fresh_name(f"{output.name}_crop_cells"), "maxpool",
                       {"kernel_size": 1, "stride": list(step)})
    return True
