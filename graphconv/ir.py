"""The IR: a thin wrapper over a `networkx.DiGraph` with one node per layer.

Everything lives in the DiGraph, so there is nothing that can drift from it:

* graph attributes: `name`, `input` (the input's name), `input_shape` (C, H, W of the
  crop the classifier was trained on), `output` (the node whose value the network
  returns) and `meta` (spec extras such as preprocessing, labels and compile plans);
* node attributes: `op`, `params` (dict), `weights` (dict of float32 arrays), `shape`
  (C, H, W once shape inference ran), `loc` (the spec line that defined it), `seq`
  (creation order, to keep printing and topological order stable), `annotations`
  (what analysis passes recorded, e.g. the receptive field);
* edge attribute `index`: the argument position (concat order matters).

The input is a node too, with op "input", so edges always connect named values.
`Node` is a view (graph + name), never a copy.

Every editing verb bumps `graph.version`, so whatever was derived from the graph (a
Model's executors and receptive field, a device's prepared weights) knows to rebuild:
an edit after a run takes effect on the next run. That is why `node.params` and
`node.weights` are read-only views, and the weight arrays themselves read-only
(`writeable=False`): writing into a weight's numbers in place would bump nothing, and a
model that already ran would go on using the weights it had packed. Edit through
`set_params` / `set_weights`. Being read-only, weight arrays are shared by `Graph.copy`
rather than copied.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

import networkx as nx
import numpy as np

from graphconv.errors import GraphconvError, Location, agreeing, nearest, shown
from graphconv.ops import get_op

INPUT_OP = "input"
FUSED_LAYERS = "fused_layers"  # the annotation a fused block keeps of the layers it took in, first to last


class UnknownNodeError(GraphconvError, KeyError):
    """`graph.node(name)` of a name the graph does not have."""


def _nearest_names(name: str, names: list[str]) -> str:
    """" (did you mean 'conv1'?)" for a near miss of a node's name, else ""."""
    close = nearest(name, names)
    return f" (did you mean {' or '.join(repr(n) for n in close)}?)" if close else ""


class RemovedLayerError(GraphconvError, LookupError):
    """A Node used after a rewrite removed its layer from the graph."""


class Node:
    """A named value of the graph: a layer or the input."""

    __slots__ = ("graph", "name")

    def __init__(self, graph: "Graph", name: str):
        self.graph = graph
        self.name = name

    @property
    def _data(self) -> dict:
        try:
            return self.graph.nx.nodes[self.name]
        except KeyError:  # networkx's bare KeyError named the layer and nothing else
            raise RemovedLayerError(f"layer {self.name!r} is no longer in the graph: a rewrite removed it after this "
                                    "Node was taken (match_chain and find return lists made before any rewrite: "
                                    "skip a match whose layers are gone, `if node.name in graph`)") from None

    @property
    def op(self) -> str:
        return self._data["op"]

    @property
    def params(self) -> Mapping[str, Any]:
        """Read-only: change them with `graph.set_params`."""
        return MappingProxyType(self._data["params"])

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        """Read-only mapping: change it with `graph.set_weights`."""
        return MappingProxyType(self._data["weights"])

    @property
    def shape(self) -> tuple[int, int, int] | None:
        return self._data.get("shape")

    @property
    def loc(self) -> Location | None:
        return self._data.get("loc")

    @property
    def annotations(self) -> dict[str, Any]:
        """What analysis passes recorded on this node (e.g. "receptive_field")."""
        return self._data.setdefault("annotations", {})

    @property
    def inputs(self) -> list["Node"]:
        """Producers of this node's arguments, in argument order."""
        edges = self.graph.nx.in_edges(self.name, data="index")
        return [Node(self.graph, src) for src, _, _ in sorted(edges, key=lambda e: e[2])]

    @property
    def users(self) -> list["Node"]:
        return [Node(self.graph, n) for n in self.graph._ordered(self.graph.nx.successors(self.name))]

    @property
    def opdef(self):
        return get_op(self.op)

    def error(self, message: str, cls: type[GraphconvError] = GraphconvError,
              param: str | None = None) -> GraphconvError:
        """An error that points at this node's spec line, or, for an error about one
        parameter, at that parameter's line (a block-style layer spans several)."""
        return cls(message, loc=self.param_loc(param), layer=self.name)

    def param_loc(self, param: str | None) -> Location | None:
        """The spec line of parameter `param` where the front end recorded it (YAML's
        `param_lines`), else the layer's own line."""
        lines = self._data.get("param_lines") or {}
        loc = self.loc
        if loc is None or param not in lines:
            return loc
        return Location(loc.file, lines[param])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.graph is self.graph and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        shape = f", shape={_fmt_shape(self.shape)}" if self.shape is not None else ""
        return f"Node({self.name!r}, op={self.op!r}{shape})"


class Graph:
    """A network: the verbs pass authors need, over one networkx DiGraph."""

    def __init__(self, name: str, input_name: str, input_shape: Sequence[int],
                 meta: dict | None = None, input_loc: Location | None = None):
        self.nx = nx.DiGraph(name=name, input=input_name, input_shape=tuple(input_shape),
                             output=input_name, meta=dict(meta or {}), version=0)
        self._seq = itertools.count()
        self.nx.add_node(input_name, op=INPUT_OP, params={}, weights={}, loc=input_loc,
                         shape=tuple(input_shape), seq=next(self._seq))

    # ---- graph-level attributes ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.nx.graph["name"]

    @name.setter
    def name(self, value: str) -> None:
        self.nx.graph["name"] = value
        self._changed()

    @property
    def input(self) -> Node:
        return Node(self, self.nx.graph["input"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.nx.graph["input_shape"]

    @input_shape.setter
    def input_shape(self, shape: Sequence[int]) -> None:
        """The crop the classifier is described as trained on, (C, H, W): what every fc's
        weights and global pool's window are sized for, so a pass that changes it changes
        those too (the verifier refuses the graph otherwise)."""
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                                      for n in shape):
            raise GraphconvError(f"the input shape is (C, H, W), three whole numbers from 1, got {shown(shape)}")
        self.nx.graph["input_shape"] = tuple(int(n) for n in shape)
        self.nx.nodes[self.nx.graph["input"]]["shape"] = self.nx.graph["input_shape"]
        self._changed()

    @property
    def output(self) -> Node:
        return Node(self, self.nx.graph["output"])

    @output.setter
    def output(self, node: Node | str) -> None:
        self.nx.graph["output"] = _name(node)
        self._changed()

    @property
    def version(self) -> int:
        """A counter every editing verb increases (see the module docstring)."""
        return self.nx.graph["version"]

    def _changed(self) -> None:
        self.nx.graph["version"] += 1

    @property
    def meta(self) -> dict:
        return self.nx.graph["meta"]

    # ---- lookup -------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        """The node called `name`; an UnknownNodeError (a GraphconvError, and a KeyError
        for code that asked with `except KeyError`) naming it, with the nearest names,
        when there is none: a pass option naming a layer is user input."""
        if name not in self.nx:
            raise UnknownNodeError(f"no layer named {shown(name)}{_nearest_names(name, list(self.nx))}")
        return Node(self, name)

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def _ordered(self, names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda n: self.nx.nodes[n]["seq"])

    def nodes(self) -> list[Node]:
        """Every node, input first, in a stable topological order."""
        order = nx.lexicographical_topological_sort(self.nx, key=lambda n: self.nx.nodes[n]["seq"])
        return [Node(self, n) for n in order]

    def layers(self) -> list[Node]:
        """Every node except the input, in topological order."""
        return [n for n in self.nodes() if n.op != INPUT_OP]

    def dead_layers(self) -> list[Node]:
        """The layers whose values never reach the output, in topological order: a branch
        a spec left unused computes nothing the network returns."""
        live = nx.ancestors(self.nx, self.nx.graph["output"]) | {self.nx.graph["output"]}
        return [n for n in self.layers() if n.name not in live]

    def erase_dead_layers(self) -> list[str]:
        """Erase the layers whose values never reach the output (`dead_layers`), users
        before the layers they read; their names, in topological order."""
        dead = self.dead_layers()
        for node in reversed(dead):
            self.erase(node)
        return [node.name for node in dead]

    def find(self, op: str) -> list[Node]:
        return [n for n in self.layers() if n.op == op]

    def downstream(self, node: Node | str) -> list[Node]:
        """The layers that read `node`'s value, directly or through others, in topological order."""
        below = nx.descendants(self.nx, _name(node))
        return [n for n in self.layers() if n.name in below]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    # ---- editing ------------------------------------------------------------------------
    def add(self, name: str, op: str, inputs: Sequence[Node | str], params: dict | None = None,
            weights: dict | None = None, loc: Location | None = None,
            param_lines: Mapping[str, int] | None = None) -> Node:
        """Add a layer reading `inputs` (in argument order). Its params are put in the
        IR's one form (`stride=2` is kept as (2, 2)), checked, and completed with the
        schema's defaults, as a spec's are (`{"out_channels": 8, "kernel_size": 1}` is a
        whole conv); a required one left out is named by `verify`. Its weights are
        checked and kept as `set_weights` keeps them. Inputs that are not in the graph
        are refused, naming the nearest names (a misspelt one made a node of its own).
        `param_lines`: the spec line of each parameter, for errors about one
        (`Node.error(..., param=)`)."""
        if name in self.nx:
            raise ValueError(f"a node named {name!r} already exists")
        opdef = get_op(op)
        sources = [self.node(_name(src)).name for src in inputs]
        canonical = _completed(opdef, _canonical_params(opdef, params or {}, name, loc))
        stored = {key: _stored_weight(key, array, loc, name) for key, array in (weights or {}).items()
                  if array is not None}  # None: no such weight, as set_weights takes it
        self.nx.add_node(name, op=op, params=canonical, weights=stored, loc=loc, shape=None, seq=next(self._seq),
                         param_lines=dict(param_lines or {}))
        for index, src in enumerate(sources):
            self._connect(src, name, index)
        self._changed()
        return Node(self, name)

    def fresh_name(self, base: str) -> str:
        """`base`, or `base_2`, `base_3`... whichever is not taken yet."""
        if base not in self.nx:
            return base
        return next(f"{base}_{i}" for i in itertools.count(2) if f"{base}_{i}" not in self.nx)

    def replace_all_uses(self, old: Node | str, new: Node | str) -> None:
        """Make every user of `old` (and the graph output) read `new` instead, except the
        layers `new` is computed from: `new` built on `old` (a swish gate, `mul(old,
        sigmoid(old))`) goes in `old`'s place in one call, where rewiring its own inputs
        would make a cycle."""
        old, new = _name(old), _name(new)
        computing_new = nx.ancestors(self.nx, new) | {new}
        for user in list(self.nx.successors(old)):
            if user in computing_new:
                continue
            index = self.nx.edges[old, user]["index"]
            self.nx.remove_edge(old, user)
            self._connect(new, user, index)
        if self.nx.graph["output"] == old:
            self.nx.graph["output"] = new
        self._changed()

    def remove(self, node: Node | str) -> None:
        """Remove a node. A node with one input is bypassed: its users read that input.
        A node with users but several inputs cannot be bypassed and must be replaced."""
        name = _name(node)
        n = self.node(name)
        if n.op == INPUT_OP:
            raise ValueError("the input node cannot be removed")
        if n.users or self.nx.graph["output"] == name:
            sources = n.inputs
            if len(sources) != 1:
                raise ValueError(f"cannot bypass {name!r}: it has {len(sources)} inputs")
            self.replace_all_uses(name, sources[0])
        self.nx.remove_node(name)
        self._changed()

    def erase(self, node: Node | str) -> None:
        """Delete a node whose value nobody reads (dead code); see `remove` to bypass one."""
        name = _name(node)
        n = self.node(name)
        if n.op == INPUT_OP:
            raise ValueError(f"cannot erase {name!r}: it is the graph's input")
        if self.nx.graph["output"] == name:
            raise ValueError(f"cannot erase {name!r}: it is the graph's output (make another node the output first: graph.output = ...)")
        if n.users:
            readers = ", ".join(repr(u.name) for u in n.users)
            raise ValueError(f"cannot erase {name!r}: {readers} still read it (replace_all_uses first, or "
                             "remove() to bypass it)")
        self.nx.remove_node(name)
        self._changed()

    def replace(self, old: Node | str, op: str, params: dict | None = None,
                weights: dict | None = None, name: str | None = None) -> Node:
        """Put a new layer in place of `old`: same inputs, same users, same spec location.
        It keeps old's name unless `name` is given."""
        old_node = self.node(_name(old))
        if name is not None and name != old_node.name and name in self.nx:
            raise ValueError(f"a node named {name!r} already exists")
        # Refused before any edit: the params, and the weights as `add` will keep them.
        _canonical_params(get_op(op), params or {}, name or old_node.name, old_node.loc)
        weights = {key: _stored_weight(key, array, old_node.loc, name or old_node.name)
                   for key, array in (weights or {}).items() if array is not None}
        inputs = [n.name for n in old_node.inputs]
        loc, seq = old_node.loc, old_node._data["seq"]
        users = [(u, self.nx.edges[old_node.name, u]["index"]) for u in self.nx.successors(old_node.name)]
        was_output = self.nx.graph["output"] == old_node.name
        self.nx.remove_node(old_node.name)
        new = self.add(name or old_node.name, op, inputs, params, weights, loc)
        self.nx.nodes[new.name]["seq"] = seq
        for user, index in users:
            self._connect(new.name, user, index)
        if was_output:
            self.nx.graph["output"] = new.name
        self._changed()
        return new

    def insert_after(self, node: Node | str, name: str, op: str, params: dict | None = None,
                     weights: dict | None = None) -> Node:
        """Insert a layer that reads `node`; node's former users read the new layer."""
        anchor = self.node(_name(node))
        users = [(u, self.nx.edges[anchor.name, u]["index"]) for u in self.nx.successors(anchor.name)]
        new = self.add(name, op, [anchor], params, weights, _beside(anchor, "after"))
        for user, index in users:
            self.nx.remove_edge(anchor.name, user)
            self._connect(new.name, user, index)
        if self.nx.graph["output"] == anchor.name:
            self.nx.graph["output"] = new.name
        self._changed()
        return new

    def insert_before(self, node: Node | str, name: str, op: str, params: dict | None = None,
                      weights: dict | None = None) -> Node:
        """Insert a layer between `node` and its (single) input; the input's other users
        still read the input."""
        anchor = self.node(_name(node))
        sources = anchor.inputs
        if len(sources) != 1:
            raise ValueError(f"cannot insert before {anchor.name!r}: it has {len(sources)} inputs")
        new = self.add(name, op, [sources[0]], params, weights, _beside(anchor, "before"))
        self.nx.remove_edge(sources[0].name, anchor.name)
        self._connect(new.name, anchor.name, 0)
        self._changed()
        return new

    def set_inputs(self, node: Node | str, inputs: Sequence[Node | str]) -> None:
        """Make `node` read `inputs` (in argument order) instead of what it read."""
        name = self.node(_name(node)).name
        sources = [self.node(_name(src)).name for src in inputs]  # all there before any edit
        for src in list(self.nx.predecessors(name)):
            self.nx.remove_edge(src, name)
        for index, src in enumerate(sources):
            self._connect(src, name, index)
        self._changed()

    def _connect(self, src: str, dst: str, index: int) -> None:
        """Make `dst` read `src` as its argument `index`. A layer can read one value in
        two places (`x + x`, an ONNX Sum of a, a and b), but a DiGraph holds one edge per
        pair of nodes, and a second would overwrite the first: the second use reads an
        identity layer of `src` instead, the same values."""
        if self.nx.has_edge(src, dst):
            again = self.fresh_name(f"{src}_again")
            data = self.nx.nodes[src]
            self.nx.add_node(again, op="identity", params={}, weights={}, loc=data["loc"],
                             shape=data["shape"], seq=next(self._seq))
            self.nx.add_edge(src, again, index=0)
            src = again
        self.nx.add_edge(src, dst, index=index)

    def set_params(self, node: Node | str, **params: Any) -> None:
        """Change some of a layer's params, put in the IR's one form and checked: a bad
        value is refused here, at the pass's own line, naming the layer."""
        data = self.node(_name(node))._data
        data["params"].update(_canonical_params(get_op(data["op"]), params, _name(node), data["loc"]))
        self._changed()

    def set_weights(self, node: Node | str, **arrays: np.ndarray) -> None:
        """Attach float32 weights (e.g. weight=..., bias=...); None removes one. A NaN or
        infinite value is refused here, naming the layer: a pass's folding arithmetic gone
        wrong would otherwise give all-NaN maps. The graph keeps a read-only view of each
        array (no copy where it is float32 already): in-place edits through
        `node.weights` raise, and the caller should not write into an array it passed."""
        data = self.node(_name(node))._data
        # Every array checked before any is stored: a refusal changes nothing.
        stored = {key: None if value is None else _stored_weight(key, value, data["loc"], _name(node))
                  for key, value in arrays.items()}
        weights = data["weights"]
        for key, array in stored.items():
            if array is None:
                weights.pop(key, None)
            else:
                weights[key] = array
        self._changed()

    def set_shape(self, node: Node | str, shape: tuple[int, int, int] | None) -> None:
        self.nx.nodes[_name(node)]["shape"] = shape

    def forget_shapes(self) -> None:
        """Every layer's shape back to None (the input's is the network's own), once an
        edit has made them stale: shape inference fills them again. Done node by node,
        in no order, so a graph a pass left broken (a cycle) is still left for `verify`
        to name."""
        for name, data in self.nx.nodes(data=True):
            if data.get("op") != INPUT_OP:
                data["shape"] = None

    def forget_annotations(self, keys) -> None:
        """Drop annotations `keys` from every node: an analysis made stale by an edit."""
        for name in self.nx.nodes:
            annotations = self.nx.nodes[name].get("annotations")
            for key in keys if annotations else ():
                annotations.pop(key, None)

    def annotate(self, node: Node | str, key: str, value: Any) -> None:
        """Record an analysis result on a node (read back through `node.annotations`)."""
        self.node(_name(node)).annotations[key] = value

    def match_chain(self, ops: Sequence[str]) -> list[tuple[Node, ...]]:
        """Every chain of layers whose ops are `ops` in order, where each layer but the
        last feeds only the next one (so the chain can be rewritten as a unit). The list
        is made before any rewrite and chains may overlap (conv, conv, conv gives two for
        ["conv", "conv"]): a pass that removes layers skips the matches they were in."""
        matches = []
        for head in self.find(ops[0]):
            chain = [head]
            for op in ops[1:]:
                users = chain[-1].users
                if (len(users) != 1 or users[0].op != op or len(users[0].inputs) != 1
                        or self.nx.graph["output"] == chain[-1].name):
                    break
                chain.append(users[0])
            if len(chain) == len(ops):
                matches.append(tuple(chain))
        return matches

    def copy(self) -> "Graph":
        """A copy that passes may edit freely: structure, params, annotations and meta
        are copied; the weight arrays, read-only, are shared (a pass replaces them with
        `set_weights`), so a pipeline does not copy a VGG's 500 MB per run."""
        shared = {id(array): array for _, data in self.nx.nodes(data=True)
                  for array in data.get("weights", {}).values() if isinstance(array, np.ndarray)}
        new = Graph.__new__(Graph)
        new.nx = copy.deepcopy(self.nx, shared)
        new._seq = itertools.count(self._next_seq())
        return new

    def _next_seq(self) -> int:
        return max((d.get("seq", -1) for _, d in self.nx.nodes(data=True)), default=-1) + 1

    def __getstate__(self) -> dict:
        """Pickled (and deep-copied) as the DiGraph and the next creation number."""
        return {"nx": self.nx, "seq": self._next_seq()}

    def __setstate__(self, state: dict) -> None:
        """Unpickled weight arrays come back writeable: make them read-only again."""
        self.nx, self._seq = state["nx"], itertools.count(state["seq"])
        for _, data in self.nx.nodes(data=True):
            weights = data.get("weights", {})
            for key, array in weights.items():
                weights[key] = _read_only(array)

    # ---- checking and printing -----------------------------------------------------------
    def verify(self) -> None:
        """Check the IR's invariants; raise GraphconvError naming the broken one and its node.
        Shapes and weights are checked by `graphconv.shapes.infer_shapes`, which the
        pass manager's verifier runs after this."""
        self._check_node_attributes()
        if not nx.is_directed_acyclic_graph(self.nx):
            cycle = nx.find_cycle(self.nx)
            raise GraphconvError(f"the graph has a cycle through {', '.join(e[0] for e in cycle)}")
        inputs = [n for n, d in self.nx.nodes(data=True) if d["op"] == INPUT_OP]
        if inputs != [self.nx.graph["input"]]:
            raise GraphconvError(f"the graph must have exactly one input node, found {inputs}")
        if self.nx.graph["output"] not in self.nx:
            raise GraphconvError(f"the output {self.nx.graph['output']!r} is not a node")
        for node in self.layers():
            opdef = get_op(node.op)
            indices = sorted(i for _, _, i in self.nx.in_edges(node.name, data="index"))
            if indices != list(range(len(indices))):
                raise node.error(f"argument positions {indices} are not 0..{len(indices) - 1}")
            problem = opdef.arity_problem(len(indices))
            if problem:
                raise node.error(problem)
            unknown = set(node.params) - {p.name for p in opdef.params}
            if unknown:
                raise node.error(f"unknown {agreeing(len(unknown), 'parameter', 'parameters')} "
                                 f"{sorted(unknown)} for op {node.op}")
            missing = [p.name for p in opdef.params if p.name not in node.params
                       and (p.default_from is None or p.default_from in node.params)]
            if missing:  # one that defaults to another (a pool's stride) is named when that one is there
                raise node.error(f"{node.op} is missing required "
                                 f"{agreeing(len(missing), 'parameter', 'parameters')} {missing}, "
                                 f"which {agreeing(len(missing), 'has', 'have')} no default")
            _check_param_values(node, opdef)
            for key, array in node.weights.items():
                if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                    raise node.error(f"weight '{key}' must be a float32 array")

    def _check_node_attributes(self) -> None:
        """Every node must be a layer or the input, with an op and params: networkx's own
        `add_edge(a, "ghost")` makes a node of a name it does not know, with nothing on it,
        which every later check would trip over with a bare KeyError."""
        for name, data in self.nx.nodes(data=True):
            lacking = [key for key in ("op", "params", "weights", "seq") if key not in data]
            if lacking:
                readers = ", ".join(repr(src) for src in self.nx.predecessors(name))
                made_by = f" (an edge from {readers} made it)" if readers else ""
                raise GraphconvError(f"a node with no {', '.join(lacking)}, made by networkx directly{made_by} "
                                     "rather than by a graph verb: add layers with graph.add, rewire them with "
                                     "graph.set_inputs", layer=name)

    def __repr__(self) -> str:
        """One line a notebook shows for a graph left at the end of a cell (`print(graph)`
        gives the whole IR)."""
        output = self.output
        shape = f" {_fmt_shape(output.shape)}" if output.shape is not None else ""
        return (f"<graphconv.Graph {self.name!r}: input {_fmt_shape(self.input_shape)}, "
                f"{len(self.layers())} layers, output %{output.name}{shape}; print() it for the IR>")

    def __str__(self) -> str:
        """A readable dump: one line per node, `%name = op(inputs) {params} -> shape`."""
        lines = [f"graph {self.name} (input %{self.input.name}: {_fmt_shape(self.input_shape)})"]
        for node in self.layers():
            args = ", ".join(f"%{i.name}" for i in node.inputs)
            params = ", ".join(f"{k}={_fmt_value(v)}" for k, v in node.params.items())
            weights = " ".join(f"{k}{list(v.shape)}" for k, v in node.weights.items())
            line = f"  %{node.name} = {node.op}({args})"
            if params:
                line += f" {{{params}}}"
            if weights:
                line += f" weights: {weights}"
            if node.shape is not None:
                line += f" -> {_fmt_shape(node.shape)}"
            if "layout" in node.annotations:  # how the value is stored (the channels-last pass)
                line += f" [{node.annotations['layout']}]"
            lines.append(line)
        lines.append(f"  return %{self.output.name}")
        return "\n".join(lines)

    def to_dot(self, shapes: Mapping[str, tuple[int, int, int]] | None = None) -> str:
        """The graph in Graphviz's DOT language, a box per layer (its name, op, params
        other than their defaults, and its shape: from `shapes` where given, else as the
        graph holds it) and an arrow per input, numbered where a layer takes several:
        for `dot -Tsvg graph.dot -o graph.svg`, or any viewer of .dot files."""
        input_label = _dot_text([self.input.name, f"input {_fmt_shape(self.input_shape)}"])
        lines = [f"digraph {_dot_text([self.name])} {{", "  rankdir=TB;", '  node [shape=box, fontname="monospace"];',
                 f"  {_dot_text([self.input.name])} [label={input_label}, shape=ellipse];"]
        for node in self.layers():
            label = [node.name, node.op]
            defaults = {param.name: _fmt_value(param.default) for param in node.opdef.params}
            shown_params = [f"{k}={_fmt_value(v)}" for k, v in node.params.items()
                            if k in DOT_PARAMS and _fmt_value(v) != defaults.get(k)]
            if shown_params:
                label.append(" ".join(shown_params))
            shape = shapes.get(node.name) if shapes is not None else node.shape
            if shape is not None:
                label.append(_fmt_shape(shape))
            style = ", peripheries=2" if node.name == self.output.name else ""  # the output: a double box
            lines.append(f"  {_dot_text([node.name])} [label={_dot_text(label)}{style}];")
            several = len(node.inputs) > 1
            for index, source in enumerate(node.inputs):
                edge_label = f" [label={index}]" if several else ""
                lines.append(f"  {_dot_text([source.name])} -> {_dot_text([node.name])}{edge_label};")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _dot_text(lines: list[str]) -> str:
    """A DOT string of `lines`, quoted, one line each (DOT's own \\n between them)."""
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(escaped) + '"'


# the params a DOT box shows where not their defaults: the width and the window, what tells one conv from the next
DOT_PARAMS = ("out_channels", "out_features", "kernel_size", "stride", "dilation", "groups", "activation")


def _canonical_params(opdef, params: Mapping[str, Any], layer: str, loc: Location | None) -> dict:
    """`params` with each value in canonical form (`graphconv.params`); a name the op does
    not take (`strid=1`) is refused with the one it likely meant, as in a spec: left for
    `Graph.verify`, it was named only at the end of the pipeline, and on a loaded model's
    graph, never (its run ignored it)."""
    from graphconv.params import check_value, refuse_unknown_params
    known = {p.name: p for p in opdef.params}
    out = dict(params)
    try:
        refuse_unknown_params(opdef, params)
        for key, value in params.items():
            out[key] = check_value(known[key], value)
    except GraphconvError as err:
        raise GraphconvError(err.message, loc=loc, layer=layer) from None
    return out


def _completed(opdef, params: dict) -> dict:
    """`params` with each schema parameter it leaves out set to its default (or, for one
    that defaults to another, that one's value), as `normalize_params` does for a spec's
    layers; a required one stays missing, for `Graph.verify` to name."""
    from graphconv.params import check_value
    from graphconv.ops.registry import REQUIRED
    out = dict(params)
    for p in opdef.params:
        if p.name in out:
            continue
        if p.default_from is not None:
            if p.default_from in out:
                out[p.name] = out[p.default_from]
        elif p.default is not REQUIRED:
            out[p.name] = check_value(p, p.default)
    return out


def _stored_weight(key: str, value: Any, loc: Location | None, layer: str) -> Any:
    """A weight as the graph keeps it: float32, contiguous and read-only (no copy where it
    is so already); a NaN or infinite value refused, naming the layer (a pass's folding
    arithmetic gone wrong gave all-NaN maps). What is not numbers is left for `verify`
    to refuse."""
    try:
        array = np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        return value
    if not np.isfinite(array).all():
        raise GraphconvError(f"weight {shown(key)} has NaN or infinite values", loc=loc, layer=layer)
    return _read_only(array)


def _read_only(array: Any) -> Any:
    """A view of a weight array that cannot be made writeable again (the array itself if
    it is one already); what is not an array is left for `Graph.verify` to refuse.

    The view reads the array's memory through a read-only memoryview, so
    `setflags(write=True)` on it raises: a plain read-only view of a writeable array
    could be flipped back, and a pass that did so and wrote into it changed the numbers
    of every graph sharing the array (the one a pipeline was given, verify's reference
    classifier) where no check could restore them."""
    if not isinstance(array, np.ndarray) or _locked(array):
        return array
    try:
        if array.ndim == 0:  # numpy lets a 0-d array over a read-only memoryview be made writeable
            return np.asarray(memoryview(array.reshape(1)).toreadonly()).reshape(())
        return np.asarray(memoryview(array).toreadonly())
    except (TypeError, ValueError, NotImplementedError):  # a dtype the buffer protocol does not carry
        view = array.view()
        view.flags.writeable = False
        return view


def _locked(array: np.ndarray) -> bool:
    """Whether `_read_only` made this view, or a view of one: its memory is seen through
    a read-only memoryview."""
    base = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    return not array.flags.writeable and isinstance(base, memoryview) and base.readonly


def _check_param_values(node: Node, opdef) -> None:
    """Each parameter's value must be one its op takes, in the one form the IR keeps
    (`graphconv.params`): a pass's stride of 0 or unknown activation is refused here,
    naming the layer, and not by a kernel dividing by zero or a later load."""
    from graphconv.params import check_value
    for p in opdef.params:
        value = node.params[p.name]
        try:
            canonical = check_value(p, value)
        except GraphconvError as err:
            raise node.error(err.message) from None
        if canonical != value or type(canonical) is not type(value) and isinstance(canonical, tuple):
            raise node.error(f"'{p.name}' is {shown(value)}, which the IR keeps as {shown(canonical)} (passes "
                             "that set parameters can put them in that form with graphconv.params.check_value)")


def _beside(anchor: Node, side: str) -> Location | None:
    """The location of a layer a pass inserts next to `anchor`: the anchor's line,
    saying whose it is."""
    loc = anchor.loc
    if loc is None:
        return None
    return replace(loc, added=f"a pass added it {side} {shown(anchor.name)}")


def _name(node: Node | str) -> str:
    return node.name if isinstance(node, Node) else node


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return str(value[0]) if len(set(value)) == 1 else "x".join(str(v) for v in value)
    return str(value)
