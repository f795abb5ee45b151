"""Dropout is the identity at inference: drop the layers and reconnect their users."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("remove-dropout", "remove dropout layers (identity at inference)", preserves=("shapes",))
def remove_dropout(graph: Graph) -> bool:
    dropouts = graph.find("dropout")
    for node in dropouts:
        graph.remove(node)
    return bool(dropouts)
