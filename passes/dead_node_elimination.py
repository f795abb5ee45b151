"""Remove layers whose values never reach the network's output."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("dead-node-elimination", "remove layers that do not contribute to the output",
               preserves=("shapes",))
def dead_node_elimination(graph: Graph) -> bool:
    return bool(graph.erase_dead_layers())
