"""Annotate every node with its receptive field (size, cumulative stride, offset)."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass
from graphconv.receptive import receptive_fields


@register_pass("receptive-field", "annotate every node with its receptive field, stride and offset",
               provides=("receptive-fields",), analysis=True)
def receptive_field(graph: Graph) -> bool:
    for name, field in receptive_fields(graph).items():
        graph.annotate(name, "receptive_field", field)
    return False
