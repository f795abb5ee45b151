"""Remove layers whose values never reach the network's output."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("dead-node-elimination", "remove layers that do not contribute to the output",
               preserves=("shapes",))
def dead_node_elimination(graph: Graph) -> bool:
    live = {graph.output.name}
    for node in reversed(graph.nodes()):
        if node.name in live:
            live.update(source.name for source in node.inputs)
    dead = [node for node in graph.layers() if node.name not in live]
    for node in reversed(dead):  # users before the layers they read
        graph.erase(node)
    return bool(dead)
