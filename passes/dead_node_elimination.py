"""Remove layers whose values never reach the network's output."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("dead-node-elimination", "remove layers that do not contribute to the output",
               preserves=("shapes",))
def dead_node_elimination(graph: Graph) -> bool:
    dead = graph.dead_layers()
    for node in reversed(dead):  # users before the layers they read
        graph.erase(node)
    return bool(dead)
