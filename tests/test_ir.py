"""The IR's editing verbs, pattern matcher, verifier and text form."""
import numpy as np
import pytest

from graphconv.errors import GraphconvError
from graphconv.ir import Graph, RemovedLayerError
from graphconv.frontends import load_network as load_spec
from conftest import SPECS


@pytest.fixture
def chain():
    g = Graph("g", "x", (3, 8, 8))
    g.add("c", "conv", ["x"], dict(out_channels=4, kernel_size=3, stride=1, padding=0, dilation=1,
                                   groups=1, bias=True, activation="none"))
    g.add("r", "relu", ["c"])
    g.add("p", "maxpool", ["r"], dict(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False))
    g.output = "p"
    return g


def test_find_users_inputs_and_order(chain):
    assert [n.name for n in chain.nodes()] == ["x", "c", "r", "p"]
    assert [n.name for n in chain.find("relu")] == ["r"]
    assert chain.node("r").inputs == [chain.node("c")]
    assert chain.node("c").users == [chain.node("r")]


def test_downstream_is_every_reader_direct_or_not_in_order(chain):
    chain.add("side", "relu", ["c"])
    chain.add("sum", "add", ["p", "side"])
    assert [n.name for n in chain.downstream("c")] == ["r", "p", "side", "sum"]
    assert [n.name for n in chain.downstream(chain.node("p"))] == ["sum"]
    assert chain.downstream("sum") == []


def test_erase_dead_layers_erases_what_reaches_no_output_readers_first(chain):
    """One method for dead-node-elimination and the front ends' finalize, which each had
    the loop."""
    chain.add("side", "relu", ["c"])
    chain.add("side2", "sigmoid", ["side"])  # reads side: must go first
    chain.add("other", "relu", ["x"])
    assert [n.name for n in chain.dead_layers()] == ["side", "side2", "other"]
    assert chain.erase_dead_layers() == ["side", "side2", "other"]
    assert [n.name for n in chain.nodes()] == ["x", "c", "r", "p"] and chain.erase_dead_layers() == []


@pytest.mark.parametrize("name, why", [("x", "the graph's input"), ("p", "the graph's output"),
                                       ("c", "'r' still read it")])
def test_erase_says_which_of_input_output_or_read_stops_it(chain, name, why):
    with pytest.raises(ValueError, match=f"cannot erase '{name}': .*{why}"):
        chain.erase(name)
    assert name in chain


def test_remove_reconnects_and_moves_output(chain):
    chain.remove("r")
    assert [i.name for i in chain.node("p").inputs] == ["c"]
    chain.remove("p")
    assert chain.output.name == "c"


def test_insert_after_and_before(chain):
    chain.insert_after("c", "n1", "dropout")
    chain.insert_before("p", "n2", "relu")
    assert [n.name for n in chain.nodes()] == ["x", "c", "n1", "r", "n2", "p"]
    chain.insert_after("p", "tail", "softmax")
    assert chain.output.name == "tail"


def test_an_inserted_layer_says_whose_spec_line_it_takes():
    """An error about a layer a pass inserted must not read as one about the layer
    written on the line it points at."""
    g = load_spec(SPECS / "tinydag.yaml")
    line = g.node("b1").loc.line
    after = g.insert_after("b1", "after_b1", "relu")
    before = g.insert_before("b1", "before_b1", "relu")
    assert str(after.loc).endswith(f"tinydag.yaml:{line} (a pass added it after 'b1')")
    assert str(before.loc).endswith(f"tinydag.yaml:{line} (a pass added it before 'b1')")
    assert str(g.node("b1").loc).endswith(f"tinydag.yaml:{line}")


def test_replace_keeps_wiring_argument_order_and_location():
    g = load_spec(SPECS / "tinydag.yaml")
    line = g.node("b1").loc.line
    new = g.replace("b1", "relu")
    assert new.loc.line == line
    assert [i.name for i in g.node("join").inputs] == ["b1", "b2_relu"]
    g.replace_all_uses("b2_relu", "b2")
    assert [i.name for i in g.node("join").inputs] == ["b1", "b2"]


def test_match_chain_requires_single_use(chain):
    assert [tuple(n.name for n in m) for m in chain.match_chain(["conv", "relu", "maxpool"])] == [("c", "r", "p")]
    chain.add("side", "relu", ["c"])
    assert chain.match_chain(["conv", "relu"]) == []


def test_a_node_of_a_removed_layer_says_so_and_overlapping_matches_are_listed(chain):
    """Overlapping matches (two in relu, relu, relu) left a pass holding a removed layer's
    Node, whose use was networkx's bare KeyError: 'r2'."""
    chain.insert_after(chain.node("r"), "r2", "relu")
    chain.insert_after(chain.node("r2"), "r3", "relu")
    matches = chain.match_chain(["relu", "relu"])
    assert [tuple(n.name for n in m) for m in matches] == [("r", "r2"), ("r2", "r3")]
    chain.remove(matches[0][1])
    with pytest.raises(RemovedLayerError, match="layer 'r2' is no longer in the graph: a rewrite removed it"):
        matches[1][0].op
    assert isinstance(RemovedLayerError("x"), (GraphconvError, LookupError)) and "r2" not in chain


def test_the_dot_drawing_has_a_box_per_layer_an_arrow_per_input_and_marks_the_output():
    import re

    from graphconv.ir import _dot_text

    graph = load_spec(SPECS / "tinydag.yaml")
    dot = graph.to_dot()
    assert dot.startswith('digraph "tinydag" {') and dot.rstrip().endswith("}")
    boxes = re.findall(r'^  "([^"]+)" \[label=', dot, re.M)
    assert boxes == [graph.input.name, *(node.name for node in graph.layers())]
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)"', dot, re.M)
    assert edges == [(source.name, node.name) for node in graph.layers() for source in node.inputs]
    assert '"b1" -> "join" [label=0];' in dot and '"b2_relu" -> "join" [label=1];' in dot  # a concat's order
    assert re.search(r'^  "prob" \[label="prob\\nsoftmax.*peripheries=2\];$', dot, re.M)
    assert '"stem" [label="stem\\nconv\\nout_channels=8 kernel_size=3 stride=2' in dot  # defaults left out
    shaped = graph.to_dot({node.name: (7, 6, 5) for node in graph.layers()})
    assert shaped.count("\\n7x6x5\"") == len(graph.layers())
    assert _dot_text(['say "hi"', "a\\b"]) == '"say \\"hi\\"\\na\\\\b"'


def test_verify_names_the_problem(chain):
    chain.verify()
    chain.nx.add_edge("p", "c", index=1)
    with pytest.raises(GraphconvError, match="cycle"):
        chain.verify()


def test_verify_catches_arity_and_unknown_params(chain):
    chain.add("a", "add", ["p"])
    with pytest.raises(GraphconvError, match="layer 'a': add takes at least 2"):
        chain.verify()
    chain.remove("a")
    chain.nx.nodes["r"]["params"]["bogus"] = 1  # past the verbs, which refuse it (below)
    with pytest.raises(GraphconvError, match=r"unknown parameter \['bogus'\]"):
        chain.verify()


@pytest.mark.parametrize("edit", [
    lambda g: g.set_params("p", strid=1),
    lambda g: g.add("p2", "maxpool", ["p"], {"kernel_size": 2, "strid": 1}),
    lambda g: g.replace("p", "maxpool", {"kernel_size": 2, "strid": 1}),
])
def test_the_editing_verbs_refuse_a_misspelt_param_at_once(chain, edit):
    """A typo left for verify was named only at a pipeline's end, and on a loaded model's
    graph never: its run ignored it."""
    before = chain.version
    with pytest.raises(GraphconvError, match=r"layer 'p2?': unknown parameter \['strid'\] for op maxpool: "
                                             r"'strid': did you mean 'stride'\? \(it takes: kernel_size, stride"):
        edit(chain)
    assert chain.version == before and "p2" not in chain


def test_copy_is_independent(chain):
    chain.set_weights("c", weight=np.ones((4, 3, 3, 3)))
    twin = chain.copy()
    twin.set_weights("c", weight=np.full((4, 3, 3, 3), 5))
    twin.remove("r")
    assert chain.node("c").weights["weight"].max() == 1 and "r" in chain
    assert twin.fresh_name("c") == "c_2"


def test_weight_arrays_are_read_only_in_the_graph_its_copies_and_its_pickles(chain):
    """An in-place edit bumps no version, so a model that ran would keep its packed
    weights: it raises instead, and set_weights is the way."""
    import pickle
    mine = np.ones((4, 3, 3, 3), np.float32)
    chain.set_weights("c", weight=mine)
    for graph in (chain, chain.copy(), pickle.loads(pickle.dumps(chain))):
        with pytest.raises(ValueError, match="read-only"):
            graph.node("c").weights["weight"][...] = 0
    assert mine.flags.writeable, "the caller's own array is left as it was"
    chain.add("c2", "conv", ["p"], {"out_channels": 2, "kernel_size": 1}, {"weight": np.ones((2, 4, 1, 1), np.float32)})
    assert not chain.node("c2").weights["weight"].flags.writeable


def test_verify_names_a_node_that_networkx_made_without_attributes(chain):
    chain.nx.add_edge("c", "ghost", index=0)  # networkx adds 'ghost' with nothing on it
    with pytest.raises(GraphconvError, match=r"layer 'ghost': a node with no op.*an edge from 'c'.*graph.add"):
        chain.verify()


def test_add_and_insert_after_fill_in_the_schemas_defaults(chain):
    conv = chain.insert_after("c", "c_id", "conv", {"out_channels": 4, "kernel_size": 1})
    assert conv.params["stride"] == (1, 1) and conv.params["groups"] == 1 and conv.params["activation"] == "none"
    pool = chain.add("p2", "maxpool", ["p"], {"kernel_size": 3})
    assert pool.params["stride"] == (3, 3), "a pool's stride defaults to its kernel size, as in a spec"
    chain.verify()


def test_text_form_is_readable():
    text = str(load_spec(SPECS / "tinydag.yaml"))
    assert "%join = concat(%b1, %b2_relu)" in text
    assert "%stem = conv(%data) {out_channels=8, kernel_size=3, stride=2" in text
    assert text.splitlines()[-1] == "  return %prob"


def test_a_layer_may_read_one_value_twice(chain):
    """relu(c) + relu(c) + c: a DiGraph holds one edge per pair of nodes, so the second
    use reads an identity of the value (a second edge used to overwrite the first, and
    relu + relu was relu, silently)."""
    from graphconv.runtime import run_reference
    chain.set_weights("c", weight=np.random.default_rng(1).standard_normal((4, 3, 3, 3)), bias=np.zeros(4))
    conv = chain.copy()
    conv.output = "c"
    chain.add("twice", "add", ["r", "r", "c"])
    chain.output = "twice"
    assert [n.op for n in chain.node("twice").inputs] == ["relu", "identity", "conv"]
    chain.verify()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    c = run_reference(conv, x)
    np.testing.assert_allclose(run_reference(chain, x), 2 * np.maximum(c, 0) + c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("built", ["swish", "twice"])
def test_a_layer_built_on_a_value_takes_its_place_in_one_replace_all_uses(chain, built):
    """`new = f(old)` then `replace_all_uses(old, new)`: new's own inputs keep reading old
    (a sigmoid gate's, the identity a doubled input gets), where rewiring them made a cycle."""
    from graphconv.runtime import run_reference

    chain.set_weights("c", weight=np.random.default_rng(1).standard_normal((4, 3, 3, 3)), bias=np.zeros(4))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = chain.copy()
    before.output = "r"
    r = run_reference(before, x)
    if built == "swish":
        gate = chain.add("sig", "sigmoid", ["r"])
        chain.add("new", "mul", ["r", gate])
        expected = r / (1 + np.exp(-r))
    else:
        chain.add("new", "add", ["r", "r"])
        expected = 2 * r
    chain.replace_all_uses("r", "new")
    chain.verify()
    assert [n.name for n in chain.node("p").inputs] == ["new"]
    chain.output = "new"
    np.testing.assert_allclose(run_reference(chain, x), expected, rtol=1e-6, atol=1e-6)


def test_reconnecting_a_reader_to_a_value_it_already_reads_keeps_both_uses(chain):
    chain.add("side", "relu", ["c"])
    chain.add("sum", "add", ["r", "side"])
    chain.replace_all_uses("side", "r")  # sum now reads r twice
    assert [n.op for n in chain.node("sum").inputs] == ["relu", "identity"]
    assert chain.node("sum").inputs[1].inputs[0].name == "r"


def test_params_are_kept_in_one_form_and_checked_when_set(chain):
    chain.set_params("p", stride=1, kernel_size=[3, 2])
    assert chain.node("p").params["stride"] == (1, 1) and chain.node("p").params["kernel_size"] == (3, 2)
    with pytest.raises(GraphconvError, match=r"layer 'c': 'activation' must be one of"):
        chain.set_params("c", activation="tanh")
    with pytest.raises(GraphconvError, match=r"layer 'p2': 'stride' must be an integer >= 1"):
        chain.add("p2", "maxpool", ["p"], dict(kernel_size=1, stride=0))
    chain.nx.nodes["c"]["params"]["stride"] = [1, 1]  # edited behind the verbs' back
    with pytest.raises(GraphconvError, match=r"layer 'c': 'stride' is \[1, 1\], which the IR keeps as \(1, 1\)"):
        chain.verify()


def test_weights_with_nan_or_inf_are_refused_where_they_are_set(chain):
    with pytest.raises(GraphconvError, match=r"layer 'c': weight 'bias' has NaN or infinite values"):
        chain.set_weights("c", bias=np.array([0, np.nan, 0, 0]))
    with pytest.raises(GraphconvError, match="NaN or infinite"):
        chain.set_weights("c", weight=np.full((4, 3, 3, 3), np.inf))
    assert "bias" not in chain.node("c").weights


def test_a_layer_missing_its_window_is_told_the_window_not_the_stride_that_defaults_to_it():
    graph = load_spec(SPECS / "lenet.yaml")
    graph.insert_after(graph.node("conv1"), "extra_pool", "maxpool", {})
    with pytest.raises(GraphconvError, match=r"maxpool is missing required parameter \['kernel_size'\], "):
        graph.verify()


def test_insert_before_rewires_that_node_only(chain):
    """It moved every reader of the node's input: a residual branch's other side read
    the new layer too, silently (shapes and fields unchanged, so nothing caught it)."""
    chain.add("side", "relu", ["c"])
    chain.add("sum", "add", ["p", "side"])
    chain.output = "sum"
    chain.insert_before("r", "pre_r", "relu")
    assert [n.name for n in chain.node("r").inputs] == ["pre_r"]
    assert [n.name for n in chain.node("side").inputs] == ["c"]
    assert [n.name for n in chain.node("c").users] == ["side", "pre_r"]
    chain.verify()


@pytest.mark.parametrize("verb", ["add", "insert_after", "replace"])
def test_weights_with_nan_or_inf_are_refused_by_every_verb_that_takes_weights(chain, verb):
    """Only set_weights checked: a pass adding a layer with NaN weights compiled and wrote
    a model whose every score was NaN (and that load then refused)."""
    bad = dict(weight=np.full((4,), np.nan, np.float32), bias=np.zeros(4, np.float32))
    params = dict(out_channels=4, kernel_size=1)
    edit = {"add": lambda: chain.add("bn", "conv", ["c"], params, bad),
            "insert_after": lambda: chain.insert_after("c", "bn", "conv", params, bad),
            "replace": lambda: chain.replace("r", "conv", params, bad)}[verb]
    before = str(chain)
    with pytest.raises(GraphconvError, match=r"weight 'weight' has NaN or infinite values"):
        edit()
    assert str(chain) == before


def test_float64_weights_are_kept_as_float32_by_add_as_by_set_weights(chain):
    node = chain.add("one", "conv", ["c"], dict(out_channels=2, kernel_size=1),
                     dict(weight=np.ones((2, 4, 1, 1)), bias=np.zeros(2)))
    assert {a.dtype for a in node.weights.values()} == {np.dtype(np.float32)}


def test_a_misspelt_layer_name_is_refused_by_every_verb_naming_the_nearest(chain):
    """add and set_inputs made a node of a misspelt input name, and verify then blamed a
    networkx edit; set_params on a missing layer crashed with a bare KeyError."""
    from graphconv.ir import UnknownNodeError
    before = str(chain)
    with pytest.raises(UnknownNodeError, match=r"no layer named 'rr'.*'r'"):
        chain.add("side", "relu", ["rr"])
    with pytest.raises(UnknownNodeError, match=r"no layer named 'cc'"):
        chain.set_inputs("r", ["cc"])
    with pytest.raises(UnknownNodeError, match=r"no layer named 'pp'"):
        chain.set_params("pp", kernel_size=3)
    assert str(chain) == before
    chain.verify()
