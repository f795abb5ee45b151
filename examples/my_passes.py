"""An example graphconv plugin: two small passes, written as a user would write them.

    graphconv compile specs/alexnet.yaml -o alexnet-logits \
        --plugin examples/my_passes.py --passes fc-to-conv,strip-softmax,count-ops

See docs/writing-passes.md for the walk-through.
"""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("strip-softmax", "drop a final softmax so the score map holds raw class scores",
               preserves=("shapes",))
def strip_softmax(graph: Graph) -> bool:
    """Averaging logits instead of probabilities is often what score-map users want."""
    last = graph.output
    if last.op == "interleave":  # after --output-stride with shift-and-stitch, which wraps the network
        last = last.inputs[0]
    if last.op != "softmax":
        return False
    graph.remove(last)
    return True


@register_pass("count-ops", "print how many layers of each op the network has", analysis=True)
def count_ops(graph: Graph, prefix: str = "ops:") -> bool:
    counts: dict[str, int] = {}
    for node in graph.layers():
        counts[node.op] = counts.get(node.op, 0) + 1
    print(prefix, ", ".join(f"{op} x{n}" for op, n in sorted(counts.items())))
    return False
