"""Annotate every node with its output shape (C, H, W) for the spec's input crop."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass
from graphconv.shapes import infer_shapes


@register_pass("shape-inference", "annotate every node with its output shape; reject impossible graphs",
               provides=("shapes",))
def shape_inference(graph: Graph) -> bool:
    for name, shape in infer_shapes(graph).items():
        graph.set_shape(name, shape)
    return False  # annotations only: the graph's structure is unchanged
