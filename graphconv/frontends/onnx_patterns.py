"""The ONNX node list's rewrites that run before conversion: one node for each op that
exporters write as several.

Exporters often write one op as a group of nodes: GELU before op set 20 as Erf or Tanh
arithmetic, LayerNorm before op set 17 (and tf2onnx's at any op set) as means and
square roots, nn.LocalResponseNorm as a padded average pool of x * x, Keras' PReLU as
two Relus. Converted node by node, such a group would become a chain of graphconv layers
(right values, more layers and buffers), or be refused where one of its nodes means
nothing alone (a Pad along the channels of a 5-D view). Each rewrite here finds its
group in the node list, matching only the exact form (the constants, the same x, no
other reader of the inner values), and puts one node in its place: an ONNX op of a later
op set (Gelu, PRelu) or one of graphconv's own (CHANNEL_NORM, TORCH_LRN, CHANNEL_CONV),
which its converter in `graphconv.frontends.onnx` turns into one layer. So the import is
one graphconv layer per op, computing what the group computed, whichever op set the
model was exported with.

The patterns, in the order `fused` applies them:

* `_with_gelus_fused`: x * 0.5 * (1 + erf(x / sqrt(2))), or its tanh form, in the
  exporters' orders of the product -> Gelu.
* `_with_softplus_thresholds_fused`: the dynamo exporter's Where(s > threshold, x,
  softplus(s) / beta) of nn.Softplus -> the softplus alone, where the threshold changes
  nothing in float32 (refused where it does).
* `_with_lrns_fused`: F.local_response_norm written out -> TORCH_LRN (refused where it
  starts so and ends otherwise).
* `_with_layer_norms_fused`: (x - mean) / sqrt(mean((x - mean) ** 2) + eps), then a
  weight and bias -> CHANNEL_NORM.
* `_with_moment_layer_norms_fused`: tf2onnx's Keras LayerNormalization of a small
  epsilon, as tf.nn.moments -> CHANNEL_NORM.
* `_with_batch_norm_layer_norms_fused`: tf2onnx's Keras LayerNormalization as a
  BatchNormalization of a reshaped view -> CHANNEL_NORM.
* `_with_channel_convs_fused`: ECA's Conv1d across the pooled channels, with its views
  -> CHANNEL_CONV.
* `_with_keras_prelus_fused`: tf2onnx's Keras PReLU, relu(x) - alpha * relu(-x) -> PRelu.
* `_with_adaptive_pools_fused`: the dynamo exporter's F.adaptive_avg_pool2d whose output
  size does not divide the map (a Transpose, a GatherND of the bins' windows, their means)
  -> AveragePool where the bins are of one size, else folded into the Linear after it.

Each takes the node list and `constant(name)` (an initializer's or Constant node's
value, or None) and returns a new list; the nodes it does not touch stay as they were. A
pattern that changes a constant's value (the Linear absorbing a pool) puts it in the
`replaced` that `fused` returns with the list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from graphconv.errors import shown


def fused(nodes: list, constant: Callable[[str], np.ndarray | None], refuse: Callable[[Any, str], None],
          opset: int, graph_outputs: Sequence[str]) -> tuple[list, dict[str, np.ndarray]]:
    """`nodes` (an ONNX graph's, in order) with every pattern of this module fused, in the
    order the module's docstring lists them, and the constants a pattern gave new values
    (a Linear's weight that absorbed a pool), by name. `constant(name)` is a value known
    before conversion (an initializer's or Constant node's) or None; `refuse(node,
    message)` raises the refusal of a group that looks like a pattern but is not one;
    `opset` is the model's, for constants folded on the way; `graph_outputs` are the
    graph's output names, values a group must not drop."""
    replaced: dict[str, np.ndarray] = {}
    nodes = _with_softplus_thresholds_fused(_with_gelus_fused(list(nodes), constant), constant, refuse)
    nodes = _with_lrns_fused(nodes, constant, refuse, opset, graph_outputs)
    nodes = _with_layer_norms_fused(nodes, constant)
    nodes = _with_moment_layer_norms_fused(nodes, constant)
    nodes = _with_batch_norm_layer_norms_fused(nodes, constant, graph_outputs)
    nodes = _with_channel_convs_fused(nodes, constant)
    nodes = _with_keras_prelus_fused(nodes, constant, graph_outputs)
    return _with_adaptive_pools_fused(nodes, constant, refuse, opset, graph_outputs, replaced), replaced


def _onnx():
    """The onnx module, through the front end's `require_onnx` (imported when called: the
    front end imports this module)."""
    from graphconv.frontends.onnx import require_onnx
    return require_onnx()


def _readers_of(nodes: list) -> dict[str, list]:
    """Each value's reading nodes, in order (a node reading it twice, Mul(d, d), listed twice)."""
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _sole_reader(readers: dict[str, list], name: str, op_type: str):
    """The one node reading `name`, if it is of `op_type`; else None."""
    found = readers.get(name, [])
    return found[0] if len(found) == 1 and found[0].op_type == op_type else None


@dataclass(frozen=True)
class _Wiring:
    """Which node makes each value of a node list and which read it, and the constants
    known before conversion: what a pattern asks while it matches a group."""

    producer: dict[str, Any]
    readers: dict[str, list]
    constant: Callable[[str], np.ndarray | None]

    @classmethod
    def of(cls, nodes: list, constant: Callable[[str], np.ndarray | None]) -> _Wiring:
        return cls({out: node for node in nodes for out in node.output}, _readers_of(nodes), constant)

    def sole_reader(self, name: str, *op_types: str):
        """The one node reading `name`, if it is of one of `op_types`; else None."""
        found = self.readers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type in op_types else None

    def single(self, name: str) -> bool:
        """Whether `name` is read once, by one node."""
        return len(self.readers.get(name, [])) == 1

    def made_alone(self, name: str, op_type: str):
        """The node of `op_type` making `name`, if `name` has no other reader than one node."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type and self.single(name) else None

    def is_constant(self, name: str, value: float) -> bool:
        """Whether `name` is a constant of one number, `value` (to a relative 1e-4)."""
        known = self.constant(name)
        return known is not None and known.size == 1 and bool(np.isclose(float(known.ravel()[0]), value, rtol=1e-4))


def _other_input(node, name: str) -> str | None:
    """The other input of a two-input `node` one of whose inputs is `name`; else None."""
    others = list(node.input)
    if len(others) != 2 or name not in others:
        return None
    others.remove(name)
    return others[0]


def _with_gelus_fused(nodes: list, constant: Callable[[str], np.ndarray | None]) -> list:
    """The node list with each GELU that exporters before op set 20 write out,
    x * 0.5 * (1 + erf(x / sqrt(2))), or in its tanh form (nn.GELU('tanh')),
    x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3))), replaced by one Gelu
    node (what op set 20 writes); the product in any of the orders the exporters write
    ((x * 0.5) * (1 + phi), (x * (1 + phi)) * 0.5, and the dynamo exporter's
    x * (0.5 * (1 + phi))),
    so ConvNeXt-style models import whichever op set they were exported with. Only
    groups whose inner values nothing else reads are fused."""
    from onnx import helper

    wiring = _Wiring.of(nodes, constant)
    replaced: dict[int, Any] = {}  # id of a group's last node -> the Gelu standing for the group
    dropped: set[int] = set()
    for phi in (n for n in nodes if n.op_type in ("Erf", "Tanh") and len(n.input) == 1 and len(n.output) == 1):
        found = _gelu_group(wiring, phi)
        if found is None:
            continue
        x, last, group = found
        approximate = {"approximate": "tanh"} if phi.op_type == "Tanh" else {}
        replaced[id(last)] = helper.make_node("Gelu", [x], [last.output[0]], name=phi.name, **approximate)
        dropped |= {id(n) for n in group}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped or id(n) in replaced]


def _gelu_group(wiring: _Wiring, phi) -> tuple[str, Any, list] | None:
    """(x, the group's last node, the group's nodes) of the GELU written out around `phi`,
    its Erf or Tanh: the head that feeds it x / sqrt(2) (or the tanh form's polynomial),
    then 1 + phi and its product with x and 0.5; None where that is not what surrounds it."""
    x, head = _erf_head(wiring, phi) if phi.op_type == "Erf" else _tanh_head(wiring, phi)
    add = wiring.sole_reader(phi.output[0], "Add")
    if not head or add is None or not wiring.is_constant(_other_input(add, phi.output[0]) or "", 1.0):
        return None
    product = wiring.sole_reader(add.output[0], "Mul")
    other = _other_input(product, add.output[0]) if product is not None else None
    if other is None:
        return None
    found = _gelu_product(wiring, x, add, product, other)
    if found is None:
        return None
    last, tail = found
    return x, last, [*head, phi, *tail]


def _gelu_product(wiring: _Wiring, x: str, add, product, other: str) -> tuple[Any, list] | None:
    """(the last node, the nodes from `add` on) where `product`, the Mul reading 1 + phi
    (`add`'s) and `other`, goes on to x * 0.5 * (1 + phi) in one of the exporters' orders;
    else None."""
    if other == x:  # (x * (1 + phi)) * 0.5
        last = wiring.sole_reader(product.output[0], "Mul")
        if _scaled_by(wiring, last, 0.5) != product.output[0]:
            return None
        return last, [add, product, last]
    if _scaled_by(wiring, product, 0.5) == add.output[0]:  # x * (0.5 * (1 + phi)): the dynamo exporter's
        last = wiring.sole_reader(product.output[0], "Mul")
        if last is None or _other_input(last, product.output[0]) != x:
            return None
        return last, [add, product, last]
    half = wiring.producer.get(other)  # (x * 0.5) * (1 + phi)
    if _scaled_by(wiring, half, 0.5) != x or len(wiring.readers[other]) != 1:
        return None
    return product, [add, half, product]


def _scaled_by(wiring: _Wiring, node, factor: float) -> str | None:
    """x when `node` is x * factor (either order), or x / (1 / factor)."""
    if node is None or len(node.input) != 2:
        return None
    first, second = node.input
    if node.op_type == "Div":
        return first if wiring.is_constant(second, 1.0 / factor) else None
    if node.op_type == "Mul":
        return first if wiring.is_constant(second, factor) else second if wiring.is_constant(first, factor) else None
    return None


def _erf_head(wiring: _Wiring, erf) -> tuple[str | None, list]:
    """x and the node of x / sqrt(2) (or x * sqrt(0.5)) that feeds `erf`, read by it
    alone; (x or None, []) where there is none."""
    scale = wiring.producer.get(erf.input[0])
    x = _scaled_by(wiring, scale, math.sqrt(0.5))
    return x, [scale] if x is not None and wiring.single(scale.output[0]) else []


def _tanh_head(wiring: _Wiring, tanh) -> tuple[str | None, list]:
    """x and the nodes of sqrt(2 / pi) * (x + 0.044715 * x ** 3) that feed `tanh`."""
    inner = wiring.producer.get(tanh.input[0])
    total = _scaled_by(wiring, inner, math.sqrt(2.0 / math.pi))
    add = wiring.producer.get(total) if total else None
    if add is None or add.op_type != "Add" or len(add.input) != 2 or not wiring.single(tanh.input[0]) \
            or not wiring.single(total):
        return None, []
    for x, cubic_name in (tuple(add.input), tuple(add.input)[::-1]):
        cubic = wiring.producer.get(cubic_name)
        cube_name = _scaled_by(wiring, cubic, 0.044715)
        cube = _cube_of(wiring, wiring.producer.get(cube_name), x) \
            if cube_name and wiring.single(cubic_name) and wiring.single(cube_name) else None
        if cube is not None:
            return x, [inner, add, cubic, *cube]
    return None, []


def _cube_of(wiring: _Wiring, node, x: str) -> list | None:
    """The nodes of x ** 3 ending in `node`: Pow(x, 3), or x * (x * x)."""
    if node is None:
        return None
    if node.op_type == "Pow" and node.input[0] == x and wiring.is_constant(node.input[1], 3.0):
        return [node]
    square_name = _other_input(node, x) if node.op_type == "Mul" else None
    square = wiring.producer.get(square_name) if square_name else None
    if square is not None and square.op_type == "Mul" and list(square.input) == [x, x] and wiring.single(square_name):
        return [node, square]
    return None
def _with_softplus_thresholds_fused(nodes: list, constant: Callable[[str], np.ndarray | None],
                                    refuse: Callable[[Any, str], None]) -> list:
    """The node list with PyTorch's threshold on nn.Softplus dropped where it changes
    nothing: the dynamo exporter writes nn.Softplus(beta, threshold) as
    Where(s > threshold, x, softplus(s) / beta) with s = x * beta (the Mul and Div only
    where beta != 1), and above a threshold t of 15 or more softplus(s) = s + log(1 +
    exp(-s)) rounds to s in float32 (log(1 + exp(-t)) is under half the spacing of
    float32 numbers near t; PyTorch's default is 20). The Greater and Where go; the
    Softplus (or the Div by beta) writes the Where's output, and the Mul and Div by beta
    are scale layers as anywhere. A lower threshold, where the two differ, is refused
    by name through `refuse(where_node, message)`. Only groups whose inner values
    nothing else reads are fused."""
    producer = {out: node for node in nodes for out in node.output}
    readers = _readers_of(nodes)

    def scalar(name: str) -> float | None:
        return _scalar([name], constant)

    def only_reader(name: str, node) -> bool:
        return [id(n) for n in readers.get(name, [])] == [id(node)]

    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for where in (n for n in nodes if n.op_type == "Where" and len(n.input) == 3 and len(n.output) == 1):
        condition, above, below = where.input
        greater = producer.get(condition)
        if greater is None or greater.op_type != "Greater" or len(greater.input) != 2 \
                or not only_reader(condition, where):
            continue
        scaled, threshold = greater.input[0], scalar(greater.input[1])
        if threshold is None:
            continue
        divide = producer.get(below)
        beta = None
        if divide is not None and divide.op_type == "Div" and len(divide.input) == 2:
            beta = scalar(divide.input[1])
            softplus = producer.get(divide.input[0])
        else:
            divide, softplus = None, divide
        if softplus is None or softplus.op_type != "Softplus" or list(softplus.input) != [scaled] \
                or not only_reader(softplus.output[0], where if divide is None else divide) \
                or (divide is not None and not only_reader(below, where)):
            continue
        if divide is None and above != scaled:
            continue
        if divide is not None:  # s = x * beta (either order), beta the Div's
            multiply, factor = producer.get(scaled), None
            if multiply is not None and multiply.op_type == "Mul" and len(multiply.input) == 2 \
                    and above in multiply.input:
                factor = scalar(multiply.input[1] if multiply.input[0] == above else multiply.input[0])
            if beta is None or beta == 0 or factor != beta:
                continue
        gap = math.log1p(math.exp(-threshold)) if threshold > -700 else math.inf  # softplus(t) - t
        if not (threshold > 0 and gap <= np.spacing(np.float32(threshold)) / 2) and threshold != math.inf:
            refuse(where, f"nn.Softplus with threshold {threshold:g} (a Where of x above it, softplus below): "
                          f"there PyTorch's x differs from softplus(x) by up to {gap:.2g}, "
                          "which graphconv's softplus does not do; it reads the threshold of 15 or more where "
                          "they agree in float32 (PyTorch's default is 20)")
        last = softplus if divide is None else divide
        replaced[id(last)] = _onnx().helper.make_node(
            last.op_type, list(last.input), [where.output[0]], name=last.name)
        dropped |= {id(greater), id(where)}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


TORCH_LRN = "graphconv.LocalResponseNorm"  # the node `_with_lrns_fused` writes; no file has it
LRN_LOOK = ("this looks like nn.LocalResponseNorm's decomposition (x * x viewed 5-D, padded along the channels, "
            "averaged over a window of channels, then times alpha, plus k, to the power beta, x divided by it)")


def _with_lrns_fused(nodes: list, constant: Callable[[str], np.ndarray | None],
                     refuse: Callable[[Any, str], None], opset: int, outputs: Sequence[str] = ()) -> list:
    """The node list with each nn.LocalResponseNorm that PyTorch's exporters write out
    (neither writes ONNX's LRN) replaced by one TORCH_LRN node: F.local_response_norm's
    div = x * x, viewed (N, 1, C, H, W) (Reshape, or Unsqueeze), padded by (size // 2,
    (size - 1) // 2) channels, AveragePool (size, 1, 1) at stride 1, back to (N, C, H, W)
    (Squeeze, or TorchScript's If of a Squeeze and a Reshape), * alpha + k, ** beta;
    x / div. A group that starts so (x * x viewed 5-D, padded and averaged over channels)
    but ends otherwise is refused with LRN_LOOK, so the user learns what it was, and so is
    one whose values other nodes than its own (or the graph's `outputs`) read, as they go."""
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, list] = {}
    for node in nodes:
        for name in dict.fromkeys(_names_read(node)):
            readers.setdefault(name, []).append(node)
    known = _constant_resolver(producer, constant, opset)
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for pool in (n for n in nodes if n.op_type == "AveragePool"):
        head = _lrn_head(pool, producer, known)
        if head is None:
            continue
        x, size, head_nodes = head
        problem, tail = _lrn_tail(x, head_nodes, size, producer, readers, known)
        if problem:
            refuse(pool, f"{LRN_LOOK}, but {problem}; graphconv reads it as its lrn only as PyTorch's exporters "
                         "write it")
        divide, params, tail_nodes = tail
        problem = _read_outside(head_nodes + tail_nodes, divide, readers, set(outputs))
        if problem:
            refuse(pool, f"{LRN_LOOK}, but {problem}, which would go when it is fused into one lrn; graphconv "
                         "reads it as its lrn only where nothing else reads its inner values")
        replaced[id(divide)] = _onnx().helper.make_node(
            TORCH_LRN, [x], list(divide.output), name=divide.name, **params)
        dropped |= {id(n) for n in head_nodes + tail_nodes}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


def _names_read(node) -> list[str]:
    """The names `node` reads: its inputs, and those its subgraphs' nodes read (an If's
    branches read the outer graph's values by name)."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            names += [name for inner in graph.node for name in _names_read(inner)]
    return names


def _read_outside(group: list, divide, readers: dict, outputs: set[str]) -> str | None:
    """What reads a value of `group` (nodes about to be dropped for one lrn whose output is
    `divide`'s) from outside it, or None: only its own nodes and the Div may read them."""
    inside = {id(n) for n in group} | {id(divide)}
    for node in group:
        for out in node.output:
            outside = [r for r in readers.get(out, []) if id(r) not in inside]
            if outside:
                return f"node {shown(outside[0].name)} ({outside[0].op_type}) reads its value {shown(out)}"
            if out in outputs:
                return f"the graph's output is its value {shown(out)}"
    return None


def _constant_resolver(producer: dict, constant: Callable[[str], np.ndarray | None], opset: int):
    """known(name): a value computed from constants alone (TorchScript writes the Pad's
    amounts as a chain of Concat, Reshape, Slice, Transpose and Cast), evaluated with
    ONNX's reference implementation, or None."""
    from graphconv.frontends.onnx import _elem_type  # imported when called: the front end imports this module

    onnx = _onnx()
    cache: dict[str, np.ndarray | None] = {}

    def known(name: str, depth: int = 0) -> np.ndarray | None:
        if name not in cache:
            cache[name] = constant(name)
            node = producer.get(name)
            # a dozen nodes back at most: a constant chain is short, and the feature map's
            # producers, which are never constant, would recurse through the whole network
            if cache[name] is None and node is not None and node.op_type not in ("Shape", "If") and depth < 12:
                inputs = [i for i in node.input if i]
                values = [known(i, depth + 1) for i in inputs]
                if all(v is not None for v in values):
                    from onnx.reference import ReferenceEvaluator
                    graph = onnx.helper.make_graph(
                        [node], "fold", [onnx.helper.make_tensor_value_info(i, _elem_type(onnx, v), None)
                                         for i, v in zip(inputs, values)],
                        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                         for o in node.output])
                    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
                    try:
                        results = ReferenceEvaluator(model).run(None, dict(zip(inputs, values)))
                        cache.update({o: np.asarray(r) for o, r in zip(node.output, results)})
                    except Exception:  # not evaluable here: the converters will say what it is
                        pass
        return cache[name]
    return known


def _lrn_head(pool, producer: dict, known) -> tuple[str, int, list] | None:
    """(x, size, nodes) where `pool` averages x * x viewed 5-D and padded along the
    channels over (size, 1, 1), as F.local_response_norm writes it; else None."""
    attrs = {a.name: _onnx().helper.get_attribute_value(a) for a in pool.attribute}
    kernel = list(attrs.get("kernel_shape", []))
    pad = producer.get(pool.input[0]) if pool.input else None
    view = producer.get(pad.input[0]) if pad is not None and pad.op_type == "Pad" else None
    square = producer.get(view.input[0]) if view is not None and view.op_type in ("Reshape", "Unsqueeze") else None
    if (len(kernel) != 3 or square is None or square.op_type != "Mul" or len(square.input) != 2
            or square.input[0] != square.input[1]):
        return None
    return square.input[0], int(kernel[0]), [square, view, pad, pool]


def _lrn_tail(x: str, head: list, size: int, producer: dict, readers: dict, known):
    """(problem, None) where the group that `_lrn_head` found (`head`: its x * x, view, Pad
    and AveragePool) is not F.local_response_norm's, else (None, (the Div, the lrn's
    params, the nodes from the pool to the Div))."""
    onnx = _onnx()
    _, view, pad, pool = head
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    if (list(attrs["kernel_shape"])[1:] != [1, 1] or set(attrs.get("strides", [1])) != {1} or any(attrs.get("pads", [0]))
            or attrs.get("ceil_mode", 0) or set(attrs.get("dilations", [1])) != {1}):
        return f"its AveragePool is not a window of channels at stride 1 without padding ({attrs})", None
    axes = (known(view.input[1]) if len(view.input) > 1 else
            np.asarray(next((onnx.helper.get_attribute_value(a) for a in view.attribute if a.name == "axes"), [])))
    if (view.op_type == "Reshape" and _view_dims(view.input[1], producer, known)[:2] != [None, 1]) or \
            (view.op_type == "Unsqueeze" and (axes is None or list(np.ravel(axes)) != [1])):
        return "x * x is not viewed as (N, 1, C, H, W)", None
    pads = known(pad.input[1]) if len(pad.input) > 1 and pad.input[1] else None
    value = known(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
    want = [0, 0, size // 2, 0, 0, 0, 0, (size - 1) // 2, 0, 0]
    mode = next((onnx.helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode != "constant":  # reflect or edge: the channels past the ends are not zeros, as lrn's are
        return (f"its Pad is not ({size // 2}, {(size - 1) // 2}) zero channels around a window of {size} "
                f"(its mode is {mode!r})"), None
    if pads is None or [int(p) for p in np.ravel(pads)] != want or value is None or np.any(value != 0) \
            or (len(pad.input) > 3 and pad.input[3]):
        return f"its Pad is not ({size // 2}, {(size - 1) // 2}) zero channels around a window of {size}", None
    chain = _back_to(pool.output[0], producer, readers)
    for divide in readers.get(x, []):
        found = _lrn_scaling(divide, x, producer, known, chain)
        if found is not None:
            params, nodes = found
            return None, (divide, dict(size=size, **params), nodes)
    return "no x / (k + alpha * that average) ** beta follows it", None


def _view_dims(target: str, producer: dict, known) -> list:
    """A 5-D Reshape target's dims as far as constants say (None where one is the map's
    own, read by Shape: an export with a dynamic batch concatenates them), or []."""
    whole = known(target)
    if whole is not None:
        return [None] + [int(d) for d in np.ravel(whole)[1:]] if whole.size == 5 else []
    concat = producer.get(target)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 5:
        return []
    parts = [known(name) for name in concat.input]
    return [int(p.ravel()[0]) if p is not None and p.size == 1 else None for p in parts]


def _back_to(source: str, producer: dict, readers: dict) -> Callable[[str], list | None]:
    """chain(name): the nodes that make `name` the 4-D view of `source` (Squeeze,
    Reshape, Identity, and TorchScript's If choosing between a Squeeze and an Identity
    of it, with the Shape, Gather and Equal of its condition), or None."""
    def chain(name: str) -> list | None:
        nodes: list = []
        while name != source:
            node = producer.get(name)
            if node is None:
                return None
            if node.op_type == "If":
                branches = [a.g for a in node.attribute if a.name in ("then_branch", "else_branch")]
                if len(branches) != 2 or not all(any(source in n.input for n in b.node) for b in branches):
                    return None
                nodes.append(node)
                condition = producer.get(node.input[0])
                while condition is not None and condition.op_type in ("Equal", "Gather", "Shape"):
                    nodes.append(condition)
                    if condition.op_type == "Shape":
                        return nodes if condition.input[0] == source else None
                    condition = producer.get(condition.input[0])
                return None
            if node.op_type not in ("Squeeze", "Reshape", "Identity"):
                return None
            nodes.append(node)
            name = node.input[0]
        return nodes
    return chain


def _lrn_scaling(divide, x: str, producer: dict, known, chain):
    """(alpha, beta, k as params, the nodes) where `divide` is x / ((view * alpha + k) **
    beta) and `chain` leads from view back to the pool; else None."""
    def scalar(name: str) -> float | None:
        return _scalar([name], known)

    def split(node, op_type: str):  # (the other input, the scalar) of a binary node of a scalar
        if node is None or node.op_type != op_type or len(node.input) != 2:
            return None, None
        a, b = node.input
        return (a, scalar(b)) if scalar(b) is not None else (b, scalar(a))

    if divide.op_type != "Div" or list(divide.input[:1]) != [x] or len(divide.input) != 2:
        return None
    power = producer.get(divide.input[1])
    if power is None or power.op_type != "Pow" or scalar(power.input[1]) is None:
        return None
    add, k = split(producer.get(power.input[0]), "Add")
    if k is None:
        return None
    view, alpha = split(producer.get(add), "Mul")
    if alpha is None or view is None:
        return None
    back = chain(view)
    if back is None:
        return None
    nodes = back + [producer[add], producer[power.input[0]], power]
    return dict(alpha=alpha, beta=scalar(power.input[1]), k=k), nodes
CHANNEL_NORM = "graphconv.ChannelLayerNorm"  # the node `_with_layer_norms_fused` writes; no file has it


def _with_layer_norms_fused(nodes: list, constant: Callable[[str], np.ndarray | None]) -> list:
    """The node list with each LayerNorm over one axis written out replaced by one
    CHANNEL_NORM node: d = x - mean(x); d / sqrt(mean(d ** 2) + eps), then * weight +
    bias where it has them (ReduceMean over that axis, keepdims). PyTorch's TorchScript
    exporter writes nn.LayerNorm so before op set 17 (ConvNeXt's channels-last norm), and
    ConvNeXt's own LayerNorm(data_format="channels_first") is this in Python over axis 1,
    at any op set. Only groups whose inner values nothing else reads are fused."""
    from onnx import helper

    readers = _readers_of(nodes)
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for mean, axes in _single_axis_means(nodes, constant):
        x = mean.input[0]
        sub = _sole_reader(readers, mean.output[0], "Sub")
        if sub is None or list(sub.input) != [x, mean.output[0]]:
            continue
        d = sub.output[0]
        found = _root_of_variance(d, axes, readers, constant)
        root = found[-1] if found else None
        divide = _sole_reader(readers, root.output[0], "Div") if root is not None else None
        if divide is None or list(divide.input) != [d, root.output[0]] or len({id(n) for n in readers[d]}) != 2:
            continue  # d read by the square (Pow, or Mul(d, d): listed twice) and the Div
        weight, bias, tail = _scale_and_shift_after(divide, readers, constant)
        last = (tail or [divide])[-1]
        replaced[id(last)] = helper.make_node(CHANNEL_NORM, [x, weight, bias], [last.output[0]], name=mean.name,
                                              axis=axes[0], epsilon=_scalar(found[2].input, constant))
        dropped |= {id(n) for n in [mean, sub, *found, divide, *tail]}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped or id(n) in replaced]


def _single_axis_means(nodes: list, constant: Callable[[str], np.ndarray | None]):
    """(node, [axis]) for each ReduceMean over one axis keeping its dims: where a
    written-out LayerNorm starts."""
    for node in nodes:
        axes = _kept_mean_axes(node, constant)
        if axes is not None and len(axes) == 1:
            yield node, axes


def _kept_mean_axes(node, constant: Callable[[str], np.ndarray | None]) -> list[int] | None:
    """The axes of a ReduceMean keeping its dims, from its attribute or (op set 18) input;
    None for any other node."""
    if node is None or node.op_type != "ReduceMean":
        return None
    attrs = {a.name: a for a in node.attribute}
    if "keepdims" in attrs and attrs["keepdims"].i == 0:
        return None
    if "axes" in attrs:
        return list(attrs["axes"].ints)
    axes = constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    return None if axes is None else [int(a) for a in np.ravel(axes)]


def _scalar(names: Sequence[str], constant: Callable[[str], np.ndarray | None]) -> float | None:
    """The one constant single value among `names` (an eps added to a variance, a
    power's exponent), or None where there is none or more than one."""
    values = [constant(name) for name in names]
    found = [float(v.ravel()[0]) for v in values if v is not None and v.size == 1]
    return found[0] if len(found) == 1 else None


def _root_of_variance(d: str, axes: list[int], readers: dict,
                      constant: Callable[[str], np.ndarray | None]) -> list | None:
    """[square, variance, plus eps, root]: the nodes taking sqrt(mean(d ** 2) + eps) of a
    written-out LayerNorm's d = x - mean(x), over the mean's `axes`, each the sole
    reader of the last (the square Pow(d, 2) or Mul(d, d)); None where they are not."""
    def is_square(n) -> bool:
        return (n.op_type == "Pow" and n.input[0] == d and _scalar(n.input[1:], constant) == 2.0
                or n.op_type == "Mul" and list(n.input) == [d, d])

    square = next((n for n in readers.get(d, []) if is_square(n)), None)
    variance = _sole_reader(readers, square.output[0], "ReduceMean") if square is not None else None
    if variance is None or _kept_mean_axes(variance, constant) != axes:
        return None
    plus_eps = _sole_reader(readers, variance.output[0], "Add")
    if not _constant_operand(plus_eps, variance.output[0], constant) or _scalar(plus_eps.input, constant) is None:
        return None
    root = _sole_reader(readers, plus_eps.output[0], "Sqrt")
    return None if root is None else [square, variance, plus_eps, root]


def _with_moment_layer_norms_fused(nodes: list, constant: Callable[[str], np.ndarray | None]) -> list:
    """The node list with each LayerNorm that tf2onnx writes as its moments replaced by
    one CHANNEL_NORM node. Keras' LayerNormalization with epsilon below 1.001e-5
    (ConvNeXt's 1e-6) is not TensorFlow's fused kernel but tf.nn.moments and
    tf.nn.batch_normalization: mean = ReduceMean(x); d = x - mean (the mean maybe through
    a Reshape that keeps its shape: a Transpose tf2onnx's optimiser rewrote);
    inv = Reciprocal(Sqrt(ReduceMean(d * d) + eps)), times gamma where it has one; then
    x * inv + (beta - mean * inv), with -(mean * inv) or (-mean) * inv where it has no
    beta. The mean's view goes with it as the node's sixth input, for
    `_channel_layer_norm` to check that it keeps the shape."""
    from onnx import helper

    readers = _readers_of(nodes)

    def sole(name: str, op_type: str):
        return _sole_reader(readers, name, op_type)

    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for mean, axes in _single_axis_means(nodes, constant):
        x, m = mean.input[0], mean.output[0]
        view = next((n for n in readers.get(m, []) if n.op_type == "Reshape" and constant(n.input[1]) is not None), None)
        centred = view.output[0] if view is not None else m
        sub = next((n for n in readers.get(centred, []) if n.op_type == "Sub" and list(n.input) == [x, centred]), None)
        found = _root_of_variance(sub.output[0], axes, readers, constant) if sub is not None else None
        inv = sole(found[-1].output[0], "Reciprocal") if found else None
        if inv is None:
            continue
        times_gamma = sole(inv.output[0], "Mul")
        gamma = _constant_operand(times_gamma, inv.output[0], constant)
        scale = times_gamma.output[0] if gamma else inv.output[0]
        negated = next((n for n in readers.get(m, []) if n.op_type == "Neg"), None)
        scaled_mean = next((n for n in readers.get(scale, []) if n.op_type == "Mul"
                            and set(n.input) == {scale, negated.output[0] if negated is not None else m}), None)
        scaled_x = next((n for n in readers.get(scale, []) if n.op_type == "Mul" and set(n.input) == {scale, x}), None)
        if scaled_mean is None or scaled_x is None:
            continue
        beta, shift = "", []
        if negated is None:
            shift = [sole(scaled_mean.output[0], "Sub") or sole(scaled_mean.output[0], "Neg")]
            beta = _constant_operand(shift[0], scaled_mean.output[0], constant)
            if shift[0] is None or shift[0].op_type == "Sub" and list(shift[0].input) != [beta, scaled_mean.output[0]]:
                continue
        plus = sole(scaled_x.output[0], "Add")
        if plus is None or set(plus.input) != {scaled_x.output[0], (shift or [scaled_mean])[-1].output[0]}:
            continue
        group = [mean, sub, *found, inv, scaled_mean, scaled_x, plus, *shift]
        group += [n for n in (view, times_gamma if gamma else None, negated) if n is not None]
        inside = {id(n) for n in group}
        if any(id(r) not in inside for n in group if n is not plus for out in n.output for r in readers.get(out, [])):
            continue
        layer = mean.name.rpartition("/moments/")[0] or mean.name  # Keras' layer, as tf2onnx names its nodes
        replaced[id(plus)] = helper.make_node(
            CHANNEL_NORM, [x, gamma, beta, "", "", view.input[1] if view is not None else ""], [plus.output[0]],
            name=layer, axis=axes[0], epsilon=_scalar(found[2].input, constant))
        dropped |= inside
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped or id(n) in replaced]


def _scale_and_shift_after(node, readers: dict, constant: Callable[[str], np.ndarray | None]) -> tuple[str, str, list]:
    """(weight, bias, their nodes): the constant Mul, then constant Add, that alone read
    `node`'s output, as a LayerNorm written out ends; "" for one it lacks."""
    weight, bias, tail = "", "", []
    times = _sole_reader(readers, node.output[0], "Mul")
    weight = _constant_operand(times, node.output[0], constant)
    if weight:
        tail.append(times)
        plus = _sole_reader(readers, times.output[0], "Add")
        bias = _constant_operand(plus, times.output[0], constant)
        if bias:
            tail.append(plus)
    return weight, bias, tail


def _constant_operand(node, value: str, constant: Callable[[str], np.ndarray | None]) -> str:
    """The other input of a two-input `node` one of whose inputs is `value`, if a
    constant; else "" (no node, another arity, or a run-time value)."""
    if node is None or len(node.input) != 2 or value not in node.input:
        return ""
    other = node.input[1] if node.input[0] == value else node.input[0]
    return other if constant(other) is not None else ""


def _with_batch_norm_layer_norms_fused(nodes: list, constant: Callable[[str], np.ndarray | None],
                                       outputs: Sequence[str] = ()) -> list:
    """The node list with each LayerNorm that tf2onnx writes for Keras'
    LayerNormalization(axis=-1) replaced by one CHANNEL_NORM node: the channels-last map
    x Reshaped to (1, N*H*W, C, 1), a BatchNormalization (scale 1, bias 0) with the
    statistics of its own axes 0, 2, 3 (ReduceMean, and ReduceSumSquare of x - mean over
    their count), the Reshape back, then the layer's gamma (Mul) and beta (Add). The
    two Reshapes' targets go with it, for `_channel_layer_norm` to check that they are
    those views; the nodes that only measured the reshaped value (Shape, Gather,
    ReduceProd, Cast of the count) go too."""
    from onnx import helper

    readers = _readers_of(nodes)
    producer = {out: n for n in nodes for out in n.output}

    def made_by(name: str, op_type: str):
        found = producer.get(name)
        return found if found is not None and found.op_type == op_type else None

    def reduce_axes(node) -> list[int] | None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = constant(node.input[1])
        return None if axes is None else sorted(int(a) for a in np.ravel(axes))

    def filled_with(name: str, value: float) -> bool:
        """Whether `name` is all `value`: a constant, or an Expand of a constant (tf2onnx's ones/zeros)."""
        expand = made_by(name, "Expand")
        array = constant(expand.input[0] if expand is not None else name)
        return array is not None and array.size > 0 and bool((np.asarray(array) == value).all())

    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for norm in nodes:
        if norm.op_type != "BatchNormalization" or len(norm.input) != 5 or len([o for o in norm.output if o]) != 1:
            continue
        viewed, scale, shift, mean_name, var_name = norm.input
        into = made_by(viewed, "Reshape")
        squeeze = made_by(mean_name, "Squeeze")
        mean = made_by(squeeze.input[0] if squeeze is not None else mean_name, "ReduceMean")
        divide = made_by(var_name, "Div")
        squares = made_by(divide.input[0], "ReduceSumSquare") if divide is not None else None
        sub = made_by(squares.input[0], "Sub") if squares is not None else None
        back = _sole_reader(readers, norm.output[0], "Reshape")
        if (into is None or mean is None or sub is None or back is None or mean.input[0] != viewed
                or list(sub.input) != [viewed, mean.output[0]] or reduce_axes(mean) != [0, 2, 3]
                or reduce_axes(squares) != [0, 2, 3] or not filled_with(scale, 1.0) or not filled_with(shift, 0.0)):
            continue
        weight, bias, tail = _scale_and_shift_after(back, readers, constant)
        last = (tail or [back])[-1]
        epsilon = next((helper.get_attribute_value(a) for a in norm.attribute if a.name == "epsilon"), 1e-5)
        layer = norm.name.rpartition("/FusedBatchNorm")[0] or norm.name  # Keras' layer, as tf2onnx names its nodes
        fused = helper.make_node(CHANNEL_NORM, [into.input[0], weight, bias, into.input[1], back.input[1]],
                                 [last.output[0]], name=layer, axis=-1, epsilon=float(epsilon))
        group = [into, mean, sub, squares, divide, norm, back, *tail] + ([squeeze] if squeeze is not None else [])
        measuring = _measuring(group, last.output[0], fused.input, nodes, readers, outputs)
        if measuring is None:
            continue
        replaced[id(last)] = fused
        dropped |= {id(n) for n in group + measuring}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped or id(n) in replaced]


def _measuring(group: list, result: str, needed: Sequence[str], nodes: list, readers: dict,
               outputs: Sequence[str]) -> list | None:
    """The nodes outside `group` that read the values it makes on the way to `result`,
    and those that read theirs, in turn (tf2onnx measures a value with Shape to compute
    a count): they go with the group. None where one of them is read by anything else,
    makes a graph output, or makes a value the fused node still reads (`needed`)."""
    gone = {out for n in group for out in n.output} - {result}
    inside = {id(n) for n in group}
    found: list = []
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if id(node) not in inside and any(name in gone for name in node.input):
                found.append(node)
                inside.add(id(node))
                gone |= set(node.output)
                changed = True
    for node in found:
        for out in node.output:
            if out in outputs or out in needed or any(id(reader) not in inside for reader in readers.get(out, [])):
                return None
    return found


CHANNEL_CONV = "graphconv.ChannelConv"  # the node `_with_channel_convs_fused` writes; no file has it
GATES = ("Sigmoid", "HardSigmoid")  # what ECA applies to its convolved vector, before or after the view back


def _with_channel_convs_fused(nodes: list, constant: Callable[[str], np.ndarray | None]) -> list:
    """The node list with each 1-D convolution across the channels replaced by one
    CHANNEL_CONV node (graphconv's channel_conv). ECA attention convolves the pooled
    vector of channels with a Conv1d of one input and one output channel, viewing the
    (N, C) vector as (N, 1, C) for it and back: timm's EcaModule as a Reshape to
    [N, 1, -1], the Conv, its Sigmoid and a Reshape to [N, -1, 1, 1]; ECA's reference
    code as a Squeeze of the last axis, a Transpose [0, 2, 1], the Conv, the Transpose
    back and an Unsqueeze. graphconv's own export of channel_conv is an Unsqueeze of
    axis 1, a 3-D Conv with a (k, 1, 1) kernel and a Squeeze of axis 1. Only groups
    whose inner values nothing else reads, with one filter of stride and dilation 1 and
    as many zeros padded at each end, are fused; the Sigmoid between the Conv and the
    view back is kept, after the fused node. The fused node stands where the view back
    stood: a Reshape's shape computed from the batch (Shape, Gather, Concat) comes after
    the Conv. Those shapes are checked when the node is converted."""
    wiring = _Wiring.of(nodes, constant)
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    for conv in nodes:
        weight = _channel_conv_weight(wiring, conv)
        padding = _channel_conv_padding(conv, weight) if weight is not None else None
        views = _channel_views(wiring, conv, weight.ndim) if padding is not None else None
        if views is None:
            continue
        replaced[id(views.back[-1])] = _channel_conv_nodes(conv, weight, padding, views)
        dropped |= {id(n) for n in views.into + [conv] + views.back + ([views.gate] if views.gate else [])}
    return [new for n in nodes if id(n) not in dropped or id(n) in replaced for new in replaced.get(id(n), [n])]


@dataclass(frozen=True)
class _ChannelViews:
    """How a channel conv's vector is viewed: the nodes viewing it for the Conv (`into`),
    the vector itself (`source`), the gate between the Conv and the view back (or None),
    the nodes viewing it back, and the fused value's rank (0: the Reshape back's, known
    when the node is converted)."""

    into: list
    source: str
    gate: Any
    back: list
    rank: int


def _channel_conv_weight(wiring: _Wiring, conv) -> np.ndarray | None:
    """The weight of `conv` where it is a Conv of one filter of one channel, 3-D (k,) or
    5-D (k, 1, 1) (graphconv's own export); else None."""
    weight = wiring.constant(conv.input[1]) if conv.op_type == "Conv" and len(conv.input) > 1 else None
    if weight is None or weight.ndim not in (3, 5) or weight.shape[:2] != (1, 1) \
            or weight.shape[3:] not in ((), (1, 1)):
        return None
    return weight


def _channel_conv_padding(conv, weight: np.ndarray) -> int | None:
    """The zeros `conv` pads at each end of its first axis, where it has stride and
    dilation 1, one group, explicit pads, as many at each end and none on other axes;
    else None."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    pads = [int(v) for v in attrs.get("pads", [0] * (2 * (weight.ndim - 2)))]
    if any(int(v) != 1 for key in ("strides", "dilations") for v in attrs.get(key, [])) \
            or int(attrs.get("group", 1)) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") \
            or pads[0] != pads[len(pads) // 2] or any(pads[1:len(pads) // 2] + pads[len(pads) // 2 + 1:]):
        return None
    return pads[0]


def _channel_views(wiring: _Wiring, conv, rank: int) -> _ChannelViews | None:
    """How `conv`, of a weight of `rank` dims, views its vector and back; None where the
    views are not these: graphconv's Unsqueeze and Squeeze of axis 1 (rank 5), else
    `_views_into` and `_views_back`."""
    if rank == 5:
        unsqueeze = wiring.made_alone(conv.input[0], "Unsqueeze")
        squeeze = wiring.sole_reader(conv.output[0], "Squeeze")
        if unsqueeze is None or squeeze is None or _ints(unsqueeze, "axes", wiring.constant) != [1] \
                or _ints(squeeze, "axes", wiring.constant) != [1]:
            return None
        return _ChannelViews([unsqueeze], unsqueeze.input[0], None, [squeeze], 4)
    into = _views_into(wiring, conv)
    found = _views_back(wiring, conv) if into is not None else None
    if found is None:
        return None
    gate, back, fused_rank = found
    return _ChannelViews(into, into[0].input[0], gate, back, fused_rank)


def _views_into(wiring: _Wiring, conv) -> list | None:
    """The nodes viewing the (N, C) vector as (N, 1, C) for `conv`: a Reshape (a shape
    computed from the batch is checked when converted), or a Squeeze of the last axis and
    a Transpose [0, 2, 1]; None for any other."""
    reshape, transpose = wiring.made_alone(conv.input[0], "Reshape"), wiring.made_alone(conv.input[0], "Transpose")
    squeeze = wiring.made_alone(transpose.input[0], "Squeeze") if transpose is not None else None
    if reshape is not None:  # to (N, 1, C)
        return [reshape]
    if squeeze is not None and _ints(transpose, "perm", wiring.constant) == [0, 2, 1] \
            and _ints(squeeze, "axes", wiring.constant) in ([-1], [3]):
        return [squeeze, transpose]
    return None


def _views_back(wiring: _Wiring, conv) -> tuple[Any, list, int] | None:
    """(the gate or None, the nodes viewing the vector back, the fused value's rank) after
    `conv`: a Reshape (to (N, C, 1, 1) or (N, C): its rank, 0 here, known when converted),
    or a Transpose [0, 2, 1] and an Unsqueeze of the last axis; None for any other."""
    gate = wiring.sole_reader(conv.output[0], *GATES)
    back = wiring.sole_reader(gate.output[0] if gate else conv.output[0], "Reshape", "Transpose")
    if back is not None and back.op_type == "Reshape":
        return gate, [back], 0
    elif back is not None and _ints(back, "perm", wiring.constant) == [0, 2, 1]:
        unsqueeze = wiring.sole_reader(back.output[0], "Unsqueeze")
        if unsqueeze is not None and _ints(unsqueeze, "axes", wiring.constant) in ([-1], [3]):
            return gate, [back, unsqueeze], 4
    return None


def _ints(node, key: str, constant: Callable[[str], np.ndarray | None]) -> list[int] | None:
    """An attribute of ints, or (op sets 13 on: Squeeze's and Unsqueeze's axes,
    Reshape's shape) the constant second input."""
    from onnx import helper

    for a in node.attribute:
        if a.name == key:
            return [int(v) for v in helper.get_attribute_value(a)]
    value = constant(node.input[1]) if key != "perm" and len(node.input) > 1 and node.input[1] else None
    return None if value is None else [int(v) for v in np.ravel(value)]


def _channel_conv_nodes(conv, weight: np.ndarray, padding: int, views: _ChannelViews) -> list:
    """The CHANNEL_CONV node standing for `conv` and its views, then the gate, written
    after it, where there is one."""
    from onnx import helper

    final = views.back[-1].output[0]
    bias = conv.input[2] if len(conv.input) > 2 else ""
    shapes = [view.input[1] if view.op_type == "Reshape" else "" for view in (views.into[0], views.back[0])]
    fused = helper.make_node(CHANNEL_CONV, [views.source, conv.input[1], bias, *shapes],
                             [conv.output[0] if views.gate else final],
                             name=conv.name, padding=padding, rank=views.rank, per_position=int(weight.ndim == 5))
    gate = views.gate
    if not gate:
        return [fused]
    return [fused, helper.make_node(gate.op_type, [conv.output[0]], [final], name=gate.name,
                                    **{a.name: helper.get_attribute_value(a) for a in gate.attribute})]


def _with_keras_prelus_fused(nodes: list, constant: Callable[[str], np.ndarray | None],
                             outputs: Sequence[str] = ()) -> list:
    """The node list with each PReLU that tf2onnx writes for Keras' PReLU layer (pos =
    relu(x); neg = -alpha * relu(-x); pos + neg) replaced by one PRelu node of slope
    alpha, which the PRelu converter reads as one prelu layer: Relu(x), Neg(x), Relu of
    that, a Mul by a constant (either order), then Add(relu(x), product) (either order),
    the constant being -alpha, or Sub(relu(x), product), the constant being alpha. A Sub's
    constant is the slope as it is; an Add's, negated, is a Constant node placed just
    before the PRelu. The constant is one number or one per channel (`_is_slope`); a
    Keras alpha per position, which cannot slide, stays as it was, and is refused as a Mul. Only groups whose inner values nothing else reads (nor the
    graph's `outputs`) are fused; the PRelu writes the Add's or Sub's output, named after
    the scope its nodes share (tf2onnx's Keras layer)."""
    from onnx import helper, numpy_helper

    wiring = _Wiring.of(nodes, constant)
    taken = {name for node in nodes for name in [*node.input, *node.output]} | set(outputs)
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    for neg in nodes:
        found = _keras_prelu(wiring, neg, set(outputs))
        if found is None:
            continue
        x, alpha, negated, group = found
        last, written = group[-1], []
        slope = alpha
        if negated:  # the Add's constant is -alpha: PRelu takes alpha
            slope = _fresh_name(f"{alpha}/negated", taken)
            negative = numpy_helper.from_array(np.negative(constant(alpha)), slope)
            written.append(helper.make_node("Constant", [], [slope], name=slope, value=negative))
        written.append(helper.make_node("PRelu", [x, slope], [last.output[0]], name=_prelu_name(group)))
        replaced[id(last)] = written
        dropped |= {id(n) for n in group}
    return [new for n in nodes if id(n) not in dropped or id(n) in replaced for new in replaced.get(id(n), [n])]


def _keras_prelu(wiring: _Wiring, neg, outputs: set[str]) -> tuple[str, str, bool, list] | None:
    """(x, the constant, whether it is -alpha (an Add's) rather than alpha (a Sub's), the
    group's nodes, its Add or Sub last) of the Keras PReLU whose Neg(x) is `neg`; None
    where `neg` is not one's."""
    if neg.op_type != "Neg" or len(neg.input) != 1 or len(neg.output) != 1:
        return None
    x = neg.input[0]
    negative = wiring.sole_reader(neg.output[0], "Relu")
    times = wiring.sole_reader(negative.output[0], "Mul") if negative is not None else None
    alpha = _constant_operand(times, negative.output[0], wiring.constant) if times is not None else ""
    total = wiring.sole_reader(times.output[0], "Add", "Sub") if alpha and _is_slope(wiring.constant(alpha)) else None
    kept = _other_input(total, times.output[0]) if total is not None else None
    positive = wiring.made_alone(kept, "Relu") if kept else None
    if positive is None or list(positive.input) != [x] \
            or total.op_type == "Sub" and list(total.input) != [kept, times.output[0]]:
        return None
    group = [positive, neg, negative, times, total]
    if any(out in outputs for node in group[:-1] for out in node.output):
        return None
    return x, alpha, total.op_type == "Add", group


def _is_slope(value: np.ndarray | None) -> bool:
    """Whether a constant can be a PRelu slope: float, one number or one along a single
    axis ((C, 1, 1) on an NCHW map, (1, 1, C) on tf2onnx's channels-last one, (F,) after
    a Dense layer). Whether that axis is the channels' the PRelu converter checks, as Mul's
    does (`_per_channel`); a slope per position (Keras' PReLU without shared_axes) stays
    a Mul, refused as such."""
    if value is None or not np.issubdtype(value.dtype, np.floating):
        return False
    return sum(size > 1 for size in value.shape) <= 1


def _prelu_name(group: list) -> str:
    """The fused PRelu's name: the scope its nodes' names share (tf2onnx's
    "model/p_re_lu/Relu", ".../Neg_1", ...: Keras' layer "model/p_re_lu"; under a
    PyTorch-style "/module/..." scope, that scope and "/PRelu", as the front end reads
    module paths), else the last node's name."""
    scopes = {node.name.rpartition("/")[0] for node in group}
    scope = scopes.pop() if len(scopes) == 1 else ""
    if not scope:
        return group[-1].name
    return f"{scope}/PRelu" if scope.startswith("/") else scope


def _fresh_name(name: str, taken: set[str]) -> str:
    """`name`, or `name` and a number where a value of the node list has it; then taken."""
    fresh, number = name, 1
    while fresh in taken:
        number += 1
        fresh = f"{name}_{number}"
    taken.add(fresh)
    return fresh


# Ops the dynamo exporter writes F.adaptive_avg_pool2d with, where the output size does not
# divide the map: the windows gathered, then their mean (bins of one size) or a masked sum
# divided by each bin's count (bins of two sizes)
ADAPTIVE_POOL_OPS = ("GatherND", "Transpose", "ReduceMean", "ReduceSum", "Where", "Gather", "Add", "Sub", "Mul",
                     "Div", "Cast", "Unsqueeze", "Squeeze", "Slice", "Concat", "Expand")
MAX_ADAPTIVE_POOL_NODES = 400  # a 7x7 bin grid of two sizes is some 60 nodes


@dataclass(frozen=True)
class _AdaptivePool:
    """A group of nodes computing F.adaptive_avg_pool2d(x, (oh, ow)) on x's (h, w) map."""

    x: str
    out: str
    nodes: list
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _with_adaptive_pools_fused(nodes: list, constant: Callable[[str], np.ndarray | None],
                               refuse: Callable[[Any, str], None], opset: int, outputs: Sequence[str],
                               replaced: dict[str, np.ndarray]) -> list:
    """The node list with each adaptive average pool whose output size does not divide
    the map (torchvision's VGG and AlexNet heads, AdaptiveAvgPool2d((7, 7)) or ((6, 6)),
    on a model trained at another crop than 224: 8x8 -> 7x7 at 256), which the dynamo
    exporter writes as a Transpose, a GatherND of every bin's window and their means
    (TorchScript's exporter refuses such a pool), replaced by what slides:

    - bins all of one size and step along each axis (8 -> 7: windows of 2 at every
      pixel): one AveragePool of that window and stride;
    - bins of two sizes (4 -> 7, 9 -> 7), which no sliding window computes: where a
      flatten and a Linear follow, the pool is a fixed linear map of the crop's map that
      the Linear's weight absorbs (`_folded_into_linear`): the Flatten of the map itself
      and the Linear over it, whose weight `replaced` gives (fc-to-conv then slides it
      like any classifier's); anywhere else, refused, saying why.

    The group is found from its Transpose [2, 3, 0, 1] and GatherND of constant windows,
    and it is taken for the pool only where it computes it: run by ONNX's reference
    implementation on every one-pixel image and a random one, it must give
    `adaptive_average_matrix`'s values."""
    wiring = _Wiring.of(nodes, constant)
    replacements: dict[int, list] = {}
    dropped: set[int] = set()
    for start in nodes:
        pool = _adaptive_pool_at(wiring, nodes, start, opset, set(outputs))
        if pool is None:
            continue
        uniform = [_uniform_bins(size, out) for size, out in zip(pool.in_hw, pool.out_hw)]
        if all(uniform):
            written = [_average_pool_node(pool, uniform, start)]
            last = pool.nodes[-1]
        else:
            folded = _folded_into_linear(wiring, pool, start, replaced)
            if folded is None:
                h, w = pool.in_hw
                oh, ow = pool.out_hw
                refuse(start, f"adaptive average pooling to {oh}x{ow} over a {h}x{w} map (F.adaptive_avg_pool2d, "
                              "as the dynamo exporter writes it where the output size does not divide the map): "
                              "its bins are of two sizes, which no sliding window computes; graphconv folds such "
                              "a pool into a Linear after its flatten (torchvision's VGG and AlexNet heads), and "
                              "here none follows. A crop whose map the output size divides, or whose map is one "
                              "pixel larger, imports as a plain average pool")
            written, last = folded
        replacements[id(last)] = written
        dropped |= {id(n) for n in pool.nodes} | {id(last)}
    return [new for n in nodes if id(n) not in dropped or id(n) in replacements for new in replacements.get(id(n), [n])]


def _adaptive_pool_at(wiring: _Wiring, nodes: list, start, opset: int, outputs: set[str]) -> _AdaptivePool | None:
    """The adaptive average pool whose Transpose [2, 3, 0, 1] is `start`, if that is one."""
    if start.op_type != "Transpose" or _attribute(start, "perm") != [2, 3, 0, 1]:
        return None
    gather = wiring.sole_reader(start.output[0], "GatherND")
    windows = wiring.constant(gather.input[1]) if gather is not None and len(gather.input) == 2 else None
    if windows is None or windows.ndim != 5 or windows.shape[4] != 2 or windows.min() < 0:
        return None
    group, out = _closed_group(wiring, nodes, start, outputs)
    if out is None:
        return None
    in_hw = (int(windows[..., 0].max()) + 1, int(windows[..., 1].max()) + 1)
    pool = _AdaptivePool(start.input[0], out, group, in_hw, (windows.shape[0], windows.shape[2]))
    return pool if _computes_the_average(pool, wiring.constant, opset) else None


def _attribute(node, name: str):
    from onnx import helper
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _closed_group(wiring: _Wiring, nodes: list, start, outputs: set[str]) -> tuple[list, str | None]:
    """The nodes computing from `start`'s output alone (and constants), in order, and the
    one value of theirs that other nodes read; (nodes, None) where that is not so."""
    values, group = set(start.output), [start]
    for node in nodes[nodes.index(start) + 1:]:
        inputs = [name for name in node.input if name]
        if node.op_type in ADAPTIVE_POOL_OPS and any(name in values for name in inputs) \
                and all(name in values or wiring.constant(name) is not None for name in inputs):
            group.append(node)
            values.update(node.output)
            if len(group) > MAX_ADAPTIVE_POOL_NODES:
                return group, None
    members = {id(node) for node in group}
    read_outside = {name for name in values if name in outputs
                    or any(id(reader) not in members for reader in wiring.readers.get(name, []))}
    if len(read_outside) != 1:
        return group, None
    out = read_outside.pop()
    return (group, out) if group[-1].output[0] == out else (group, None)


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling bins, [first, end) of each: output i of n over a side of
    s averages pixels floor(i * s / n) to ceil((i + 1) * s / n) - 1."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_average_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(oh * ow, h * w): each output of F.adaptive_avg_pool2d as a weighted sum of the
    map's pixels (`_adaptive_bins` along each axis)."""
    sides = []
    for size, out in zip(in_hw, out_hw):
        side = np.zeros((out, size))
        for i, (first, end) in enumerate(_adaptive_bins(size, out)):
            side[i, first:end] = 1.0 / (end - first)
        sides.append(side)
    return np.kron(sides[0], sides[1])


def _computes_the_average(pool: _AdaptivePool, constant: Callable[[str], np.ndarray | None], opset: int) -> bool:
    """Whether the group gives `adaptive_average_matrix`'s values, run by ONNX's reference
    implementation on every one-pixel image (a batch of h * w) and on a random batch of
    three channels."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    h, w = pool.in_hw
    made = {out for node in pool.nodes for out in node.output}
    needed = {name for node in pool.nodes for name in node.input if name and name not in made and name != pool.x}
    graph = helper.make_graph(pool.nodes, "adaptive_pool", [helper.make_tensor_value_info(pool.x, TensorProto.FLOAT,
                                                                                           None)],
                              [helper.make_tensor_value_info(pool.out, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(constant(name)), name) for name in sorted(needed)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    matrix = adaptive_average_matrix(pool.in_hw, pool.out_hw)
    pixels = np.eye(h * w, dtype=np.float32).reshape(h * w, 1, h, w)
    values = np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
    try:
        evaluator = ReferenceEvaluator(model)
        each_pixel = evaluator.run(None, {pool.x: pixels})[0]
        random = evaluator.run(None, {pool.x: values})[0]
    except Exception:  # not a group the reference runs on these shapes: not the pool
        return False
    expected = (values.reshape(2, 3, h * w) @ matrix.T).reshape(2, 3, *pool.out_hw)
    return each_pixel.shape == (h * w, 1, *pool.out_hw) and random.shape == expected.shape \
        and np.allclose(each_pixel.reshape(h * w, -1).T, matrix, atol=1e-6) \
        and np.allclose(random, expected, atol=1e-5)


def _uniform_bins(size: int, out: int) -> tuple[int, int] | None:
    """(window, stride) where every one of `out` bins over `size` pixels is that many
    pixels, each `stride` after the last (8 over 7: (2, 1); 6 over 6: (1, 1)); else None."""
    bins = _adaptive_bins(size, out)
    windows = {end - first for first, end in bins}
    steps = {b[0] - a[0] for a, b in zip(bins, bins[1:])} or {1}
    return (windows.pop(), steps.pop()) if len(windows) == 1 and len(steps) == 1 else None


def _average_pool_node(pool: _AdaptivePool, bins: list, start):
    """The AveragePool of bins of one size: no padding, so nothing to count or not."""
    from onnx import helper
    (kh, sh), (kw, sw) = bins
    node = helper.make_node("AveragePool", [pool.x], [pool.out], name=start.name, kernel_shape=[kh, kw],
                            strides=[sh, sw])
    node.metadata_props.extend(start.metadata_props)  # the module the exporter recorded, which names the layer
    return node


def _folded_into_linear(wiring: _Wiring, pool: _AdaptivePool, start,
                        replaced: dict[str, np.ndarray]) -> tuple[list, Any] | None:
    """([Flatten of the pooled map], the flatten it replaces) where the pool's output is
    flattened (Flatten, or a Reshape to (N, features)) straight into a Linear (Gemm or
    MatMul of a constant weight nothing else reads); the Linear's weight, each of its
    rows a (C, oh, ow) map, becomes the (C, h, w) map that gives the same dot products
    with the unpooled features (rows @ adaptive_average_matrix), in `replaced`."""
    from onnx import helper
    flatten = wiring.sole_reader(pool.out, "Flatten", "Reshape")
    if flatten is None or (flatten.op_type == "Flatten" and (_attribute(flatten, "axis") or 1) != 1) \
            or (flatten.op_type == "Reshape" and not _to_features(wiring, flatten)):
        return None
    linear = wiring.sole_reader(flatten.output[0], "Gemm", "MatMul")
    weight = wiring.constant(linear.input[1]) if linear is not None and len(linear.input) > 1 else None
    if weight is None or weight.ndim != 2 or not wiring.single(linear.input[1]) or linear.input[0] != flatten.output[0] \
            or _attribute(linear, "transA"):
        return None
    rows_are_outputs = linear.op_type == "Gemm" and bool(_attribute(linear, "transB"))
    matrix = adaptive_average_matrix(pool.in_hw, pool.out_hw)
    features = weight.shape[1] if rows_are_outputs else weight.shape[0]
    if features % matrix.shape[0]:
        return None
    rows = (weight if rows_are_outputs else weight.T).astype(np.float64)
    channels = features // matrix.shape[0]
    unpooled = (rows.reshape(-1, channels, matrix.shape[0]) @ matrix).reshape(rows.shape[0], -1)
    replaced[linear.input[1]] = (unpooled if rows_are_outputs else unpooled.T).astype(weight.dtype)
    node = helper.make_node("Flatten", [pool.x], [flatten.output[0]], name=flatten.name, axis=1)
    node.metadata_props.extend(flatten.metadata_props)
    return [node], flatten


def _to_features(wiring: _Wiring, reshape) -> bool:
    """Whether a Reshape's constant target makes (N, features) of a batch: [1 or -1 or 0,
    -1 or a number]."""
    target = wiring.constant(reshape.input[1]) if len(reshape.input) > 1 else None
    return target is not None and target.size == 2
