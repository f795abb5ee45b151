"""Remove layers whose values never reach the network's output."""
import networkx as nx

from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("dead-node-elimination", "remove layers that do not contribute to the output",
               preserves=("shapes",))
def dead_node_elimination(graph: Graph) -> bool:
    live = nx.ancestors(graph.nx, graph.output.name) | {graph.output.name, graph.input.name}
    dead = [node for node in graph.layers() if node.name not in live]
    for node in reversed(dead):
        graph.nx.remove_node(node.name)
    return bool(dead)
