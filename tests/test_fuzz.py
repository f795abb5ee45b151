"""A fuzzer over spec files: mutations of the bundled specs, through `load_spec` and
`compile_model` (the default pipeline), in-process.

Every example must either succeed or fail with a GraphconvError whose text is one line
of at most MESSAGE_CHARS, within the hypothesis deadline and under a 512 MB memory
budget (so a MemoryError, a traceback or a hang is a failure). The mutations work on
two levels: on the parsed document (keys deleted, values of the wrong type, huge,
negative and non-finite numbers, hostile names, deep nesting, rewired inputs, layers
dropped or repeated) and on the YAML text (alias bombs, recursive aliases, deep
brackets, stray YAML syntax, control characters, truncation, binary headers).

CI runs a bounded number of examples with a fixed seed (derandomize); set
GRAPHCONV_FUZZ_EXAMPLES=5000 for a longer hunt.
"""
from __future__ import annotations

import copy
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from graphconv import memory
from graphconv.compiler import compile_model
from graphconv.errors import GraphconvError
from graphconv.ops import all_ops
from graphconv.frontends import load_network as load_spec
from conftest import SPECS

MESSAGE_CHARS = 2000
EXAMPLES = int(os.environ.get("GRAPHCONV_FUZZ_EXAMPLES", 60))


def _bases() -> dict[str, dict]:
    """The bundled specs as documents. AlexNet's fc layers are narrowed (4096 -> 64
    features) so that seeding its weights takes milliseconds, not a second per example;
    its structure, and so what the mutations can break, is unchanged."""
    bases = {name: yaml.safe_load((SPECS / f"{name}.yaml").read_text()) for name in ("lenet", "tinydag", "alexnet")}
    for layer in bases["alexnet"]["layers"]:
        if layer.get("out_features") == 4096:
            layer["out_features"] = 64
    return bases


BASES = _bases()
OP_NAMES = sorted(op.name for op in all_ops())
PARAM_NAMES = sorted({p.name for op in all_ops() for p in op.params})

NUMBERS = st.sampled_from([0, -1, 1, 2, 3, 5, 64, 2**31 - 1, 2**31, 2**63, 10**9, 10**100, -10**100,
                           0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf"), True, False])
NAMES = st.one_of(
    st.sampled_from(["a", "conv1", "relu1", "data", "prob", "", "x" * 300, "a\nb", "a\rb", "\x1b[2J", "\x00",
                     "\u202eevil", "\u2028", "é", "名前", "a.b", "a b", "__line__", " ", "-", "*a", "&a"]),
    st.text(max_size=12),
)
SMALL = st.integers(0, 9)  # plausible sizes: specs that still load, to exercise the compiler
PLAUSIBLE = st.one_of(SMALL, SMALL, NUMBERS)
SCALARS = st.one_of(NUMBERS, NAMES, st.none())
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(NAMES, SCALARS, max_size=3),
    st.builds(lambda depth, leaf: _nested(depth, leaf), st.integers(1, 40), SCALARS),
)


def _nested(depth: int, leaf):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


# ---- document mutations -------------------------------------------------------------------------

def _containers(doc: dict) -> list[dict]:
    """The mappings a mutation may edit: the document, its input, its layers."""
    found = [doc]
    if isinstance(doc.get("input"), dict):
        found.append(doc["input"])
    if isinstance(doc.get("layers"), list):
        found.extend(layer for layer in doc["layers"] if isinstance(layer, dict))
    return found


def _layers(doc: dict) -> list[dict]:
    layers = doc.get("layers")
    return [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []


def delete_key(draw, doc):
    target = draw(st.sampled_from(_containers(doc)))
    if target:
        del target[draw(st.sampled_from(sorted(target, key=str)))]


def set_value(draw, doc):
    target = draw(st.sampled_from(_containers(doc)))
    key = draw(st.one_of(st.sampled_from(sorted(target, key=str) or ["name"]), st.sampled_from(PARAM_NAMES), NAMES))
    target[key] = draw(VALUES)


def set_number(draw, doc):
    layers = _layers(doc)
    if layers:
        layer = draw(st.sampled_from(layers))
        layer[draw(st.sampled_from(PARAM_NAMES))] = draw(
            st.one_of(PLAUSIBLE, st.lists(PLAUSIBLE, min_size=2, max_size=2)))


def set_input_shape(draw, doc):
    size = st.integers(1, 300)
    doc["input"] = {"name": draw(st.sampled_from(["data", "data", "image"])) if draw(st.booleans()) else draw(NAMES),
                    "shape": draw(st.one_of(st.lists(size, min_size=3, max_size=3),
                                            st.lists(st.one_of(NUMBERS, size), min_size=0, max_size=4)))}


def rename_layer(draw, doc):
    layers = _layers(doc)
    if layers:
        names = [layer.get("name") for layer in layers if isinstance(layer.get("name"), str)]
        draw(st.sampled_from(layers))["name"] = draw(st.one_of(NAMES, st.sampled_from(names or ["a"])))


def rewire_inputs(draw, doc):
    layers = _layers(doc)
    if layers:
        names = [layer.get("name") for layer in layers if isinstance(layer.get("name"), str)] + ["data"]
        draw(st.sampled_from(layers))["inputs"] = draw(
            st.one_of(st.lists(st.one_of(st.sampled_from(names), NAMES), max_size=4), VALUES))


def change_op(draw, doc):
    layers = _layers(doc)
    if layers:
        draw(st.sampled_from(layers))["op"] = draw(st.one_of(st.sampled_from(OP_NAMES), NAMES, VALUES))


def reshape_layer_list(draw, doc):
    layers = doc.get("layers")
    if isinstance(layers, list) and layers:
        i = draw(st.integers(0, len(layers) - 1))
        action = draw(st.sampled_from(["drop", "repeat", "swap", "replace"]))
        if action == "drop":
            del layers[i]
        elif action == "repeat":
            layers.insert(i, copy.deepcopy(layers[i]))
        elif action == "swap":
            j = draw(st.integers(0, len(layers) - 1))
            layers[i], layers[j] = layers[j], layers[i]
        else:
            layers[i] = draw(VALUES)


def set_extras(draw, doc):
    """preprocess, compiled, labels, weights: the blocks beside the layers."""
    key = draw(st.sampled_from(["preprocess", "compiled", "labels", "weights", "name"]))
    if key == "preprocess":
        doc[key] = draw(st.dictionaries(st.sampled_from(["scale", "mean", "std", "shift"]),
                                        st.one_of(NUMBERS, st.lists(NUMBERS, max_size=4)), max_size=3))
    elif key == "compiled":
        stitch = st.fixed_dictionaries({"factor": st.one_of(st.lists(NUMBERS, min_size=2, max_size=2), VALUES),
                                        "step": NUMBERS})
        doc[key] = draw(st.one_of(VALUES, st.dictionaries(
            st.sampled_from(["passes", "output_stride", "stride_method", "stitch", "extra"]),
            st.one_of(NUMBERS, NAMES, st.sampled_from(["auto", "dilate", "shift"]), stitch), max_size=4)))
    elif key in ("labels", "weights"):
        doc[key] = draw(st.one_of(st.sampled_from(["/etc/passwd", "../../etc/passwd", "labels.txt", "w.npz",
                                                   "/dev/zero", ".", "a/../../b"]), VALUES))
    else:
        doc[key] = draw(VALUES)


def non_string_key(draw, doc):
    target = draw(st.sampled_from(_containers(doc)))
    target[draw(st.sampled_from([1, 2.5, True, None]))] = draw(SCALARS)


DOC_MUTATIONS = [delete_key, set_value, set_number, set_input_shape, rename_layer, rewire_inputs, change_op,
                 reshape_layer_list, set_extras, non_string_key]


# plausible mutations: specs that mostly still load, so the compiler's passes see odd networks

def tweak_param(draw, doc):
    """A small value for one of the layer's own parameters (kernel 1..9, stride 0..9, ...)."""
    layers = _layers(doc)
    if layers:
        layer = draw(st.sampled_from(layers))
        ops = [op for op in all_ops() if op.name == layer.get("op")]
        params = [p.name for p in ops[0].params] if ops else []
        if params:
            layer[draw(st.sampled_from(params))] = draw(st.one_of(SMALL, st.lists(SMALL, min_size=2, max_size=2)))


def swap_op(draw, doc):
    layers = _layers(doc)
    if layers:
        layer = draw(st.sampled_from(layers))
        op = draw(st.sampled_from(OP_NAMES))
        known = {p.name for o in all_ops() if o.name == op for p in o.params}
        for key in [k for k in layer if k not in ("name", "op", "inputs") and k not in known]:
            del layer[key]
        layer["op"] = op


def wire_to_earlier(draw, doc):
    layers = _layers(doc)
    if len(layers) > 1:
        i = draw(st.integers(1, len(layers) - 1))
        earlier = [layer.get("name") for layer in layers[:i]] + [doc.get("input", {}).get("name", "data")]
        layers[i]["inputs"] = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True))


def drop_or_repeat_layer(draw, doc):
    layers = doc.get("layers")
    if isinstance(layers, list) and len(layers) > 1:
        i = draw(st.integers(0, len(layers) - 1))
        if draw(st.booleans()):
            del layers[i]
        elif isinstance(layers[i], dict):
            layers.insert(i + 1, dict(copy.deepcopy(layers[i]), name=f"{layers[i].get('name')}_again"))
            layers[i + 1].pop("inputs", None)


def plausible_input(draw, doc):
    doc["input"] = {"name": "data", "shape": [draw(st.integers(1, 4)), draw(st.integers(1, 260)),
                                              draw(st.integers(1, 260))]}


PLAUSIBLE_MUTATIONS = [tweak_param, swap_op, wire_to_earlier, drop_or_repeat_layer, plausible_input]


# ---- text mutations ---------------------------------------------------------------------------

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
PREFIXES = [LAUGHS, "x: &r [*r]\n", "x: &r {k: *r}\n", "x: " + "[" * 1000 + "]" * 1000 + "\n",
            "x: " + "{a: " * 500 + "1" + "}" * 500 + "\n", "%YAML 1.1\n---\n", "---\n", "\ufeff",
            "x: &m {a: 1, b: 2}\ny: {<<: [*m, *m]}\n", "x: !!python/object/apply:os.system ['true']\n",
            "x: !!binary aGVsbG8=\n", "x: 2001-02-30\n", "x: 0x" + "f" * 2000 + "\n", "x: " + "9" * 5000 + "\n"]
SNIPPETS = ["\x00", "\x01", "\t", "\r", "\x85", "\u2028", "&a ", "*a", "*zz", ": ", "- ", "{", "}", "[", "]",
            "? ", "<<: ", "!!str ", "!!int ", "!!float ", "!!set ", "!!omap ", '"', "'", "#", "|", ">", "%",
            ".nan", "-.inf", "1e999", "99999999999999999999", "~", "\n  - ", "\n"]


@st.composite
def spec_bytes(draw) -> bytes:
    doc = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    mutations = draw(st.sampled_from([DOC_MUTATIONS, PLAUSIBLE_MUTATIONS, DOC_MUTATIONS + PLAUSIBLE_MUTATIONS]))
    for _ in range(draw(st.integers(1, 3))):
        draw(st.sampled_from(mutations))(draw, doc)
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=draw(st.sampled_from([None, True, False])))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))):  # mostly none: let specs parse
        action = draw(st.sampled_from(["prefix", "insert", "truncate", "repeat_line", "binary"]))
        at = draw(st.integers(0, len(text)))
        if action == "prefix":
            text = draw(st.sampled_from(PREFIXES)) + text
        elif action == "insert":
            text = text[:at] + draw(st.sampled_from(SNIPPETS)) + text[at:]
        elif action == "truncate":
            text = text[:at]
        elif action == "repeat_line":
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i] * draw(st.integers(1, 3)))
                text = "".join(lines)
        else:
            return draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"\xff\xfe",
                                         b"\x08\x07\x12\x07pytorch"])) + text.encode()
    return text.encode("utf-8", errors="surrogatepass")


@pytest.fixture
def small_budget():
    memory.set_memory_limit("512M")
    yield
    memory.set_memory_limit(None)


@settings(max_examples=EXAMPLES, deadline=5000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=spec_bytes())
def test_any_spec_loads_and_compiles_or_fails_with_one_clean_line(tmp_path, small_budget, data):
    path = tmp_path / "net.yaml"
    path.write_bytes(data)
    try:
        graph = load_spec(path)
        compile_model(graph)
    except GraphconvError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, message
        assert len(message) <= MESSAGE_CHARS, message[:200]


def test_the_bundled_specs_survive_the_fuzzer_unmutated(tmp_path, small_budget):
    """The bases themselves load and compile: a fuzzer whose every example fails at the
    first line would test nothing."""
    for name, doc in BASES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        compile_model(load_spec(path))
