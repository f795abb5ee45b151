"""Parameter names people bring (aliases, did-you-mean) and pass option values (lists,
numbers, optional options)."""
import pytest

import graphconv
from graphconv.errors import GraphconvError, PassError
from graphconv.frontends.yaml import spec_text
from graphconv.ops import get_op
from graphconv.params import normalize_params
from graphconv.pass_manager import PassManager, format_pipeline, parse_pipeline, register_pass


# ---- layer parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("op,name,hint", [
    ("conv", "kernel", "did you mean 'kernel_size'?"),
    ("conv", "stirde", "did you mean 'stride'?"),
    ("conv", "out_channel", "did you mean 'out_channels'?"),
    ("fc", "out_feature", "did you mean 'out_features'?"),
    ("maxpool", "kernal_size", "did you mean 'kernel_size'?"),
    ("lrn", "Alpha", "did you mean 'alpha'?"),
])
def test_unknown_parameters_suggest_the_nearest_name(op, name, hint):
    raw = {"conv": {"out_channels": 2, "kernel_size": 3}, "fc": {"out_features": 2},
           "maxpool": {"kernel_size": 2}, "lrn": {}}[op]
    with pytest.raises(GraphconvError, match=f"'{name}': {hint}") as err:
        normalize_params(get_op(op), {**raw, name: 1})
    assert "(it takes: " in str(err.value)


def test_a_name_far_from_any_gets_the_list_only():
    with pytest.raises(GraphconvError, match=r"unknown parameter \['colour'\] for op conv \(it takes: "):
        normalize_params(get_op("conv"), {"out_channels": 2, "kernel_size": 3, "colour": 1})


def test_a_float_param_with_a_least_value_refuses_a_smaller_one():
    """An op of one's own had no way to say a float param's range (softshrink's lambd: -1
    compiled, and verify said PASS)."""
    from dataclasses import replace

    from graphconv.ops.registry import Param

    op = get_op("clip")
    bounded = replace(op, params=(Param("min", "float", 0.0, at_least=0.0), op.params[1]))
    assert normalize_params(bounded, {"min": 0, "max": 1})["min"] == 0.0
    with pytest.raises(GraphconvError, match=r"'min' must be at least 0, got -1"):
        normalize_params(bounded, {"min": -1, "max": 1})


def test_caffes_names_are_accepted_and_stored_as_graphconvs():
    conv = normalize_params(get_op("conv"), {"num_output": 8, "kernel_size": 3, "pad": 1})
    assert conv["out_channels"] == 8 and conv["padding"] == (1, 1) and "pad" not in conv
    assert normalize_params(get_op("fc"), {"num_output": 10})["out_features"] == 10
    assert normalize_params(get_op("dropout"), {"dropout_ratio": 0.3}) == {"p": 0.3}
    assert normalize_params(get_op("maxpool"), {"kernel_size": 3, "pad": 1})["padding"] == (1, 1)
    with pytest.raises(GraphconvError, match="'pad' is Caffe's name for 'padding': give one of them"):
        normalize_params(get_op("conv"), {"out_channels": 8, "kernel_size": 3, "pad": 1, "padding": 1})


def test_dropout_takes_p_and_ignores_it_at_inference(write_spec, rng):
    spec = write_spec("""
        input: {shape: [1, 6, 6]}
        layers:
          - {name: c, op: conv, num_output: 2, kernel_size: 3, pad: 1}
          - {name: d, op: dropout, p: 0.7}
          - {name: e, op: dropout, dropout_ratio: 0.1}
        """)
    graph = graphconv.load_spec(spec)
    assert graph.node("d").params["p"] == 0.7 and graph.node("e").params["p"] == 0.1
    text = spec_text(graph, weights_file=None)
    assert "padding: 1" in text and "p: 0.7" in text and "pad:" not in text and "dropout_ratio" not in text
    x = rng.standard_normal((1, 1, 6, 6)).astype("float32")
    model = graphconv.Model(graph)
    conv_only = graphconv.Model(graphconv.run_passes(graph, "remove-dropout"))
    assert (model.run(x) == conv_only.run(x)).all()
    with pytest.raises(GraphconvError, match="'p' must be a finite number"):
        normalize_params(get_op("dropout"), {"p": "half"})


def test_a_spec_error_names_the_line_and_suggests(write_spec):
    spec = write_spec("input: {shape: [1, 8, 8]}\nlayers:\n  - {name: c, op: conv, out_channels: 2, kernel: 3}\n")
    with pytest.raises(GraphconvError, match=r"net.yaml:3: layer 'c': unknown parameter \['kernel'\] for op "
                                             r"conv: 'kernel': did you mean 'kernel_size'\?"):
        graphconv.load_spec(spec)


# ---- pass options --------------------------------------------------------------------------------

def test_option_values_are_typed_from_their_text():
    assert parse_pipeline("fold{mean=[0.485,0.456,0.406],k=2,f=0.5,on=true,name=x,empty=[]}") == [
        ("fold", {"mean": [0.485, 0.456, 0.406], "k": 2, "f": 0.5, "on": True, "name": "x", "empty": []})]
    assert parse_pipeline("a{xs=[1, 2 ,3]},b") == [("a", {"xs": [1, 2, 3]}), ("b", {})]
    items = parse_pipeline("fold{mean=[0.5,1],k=2}")
    assert parse_pipeline(format_pipeline(items)) == items
    for bad in ("a{xs=[1,2}", "a{xs=1,2]}"):
        with pytest.raises(PassError, match="unmatched"):
            parse_pipeline(bad)


def test_options_are_checked_against_defaults_and_annotations():
    @register_pass("opts-demo", "options of every kind")
    def demo(graph, mean: list[float] | None = None, scale: float = 1.0, steps: int = 2,
             layers: list = (), label: str = "x", shift: "int | None" = None, legacy: int = None):
        return False

    PassManager("opts-demo{legacy=1,mean=[0.5,1],scale=2,steps=3,shift=1}")  # ints are fine as floats
    PassManager("opts-demo{legacy=1}")  # a default of None is optional
    with pytest.raises(PassError, match="needs option"):
        PassManager("opts-demo")  # `legacy: int = None` rules None out: still required
    for text, message in (("mean=0.5", "must be a list of numbers, like"), ("mean=[a,b]", "must be a list of numbers"),
                          ("scale=[1]", "must be a number"), ("steps=1.5", "must be an integer"),
                          ("shift=x", "must be an integer"), ("layers=3", "must be a list")):
        with pytest.raises(PassError, match=f"option '{text.split('=')[0]}' of pass 'opts-demo' {message}"):
            PassManager(f"opts-demo{{legacy=1,{text}}}")
    manager = PassManager("opts-demo{legacy=1,label=5}")
    assert manager.items[0][1]["label"] == "5"  # a text option takes any value as text


def test_output_strides_stride_is_still_required():
    with pytest.raises(PassError, match=r"pass 'output-stride' needs option stride"):
        PassManager("output-stride")


def test_the_documented_way_to_change_the_input_crop(write_spec):
    """docs/writing-passes.md: set graph.input_shape (the input node's shape with it); the
    verifier re-infers shapes and names the pass when an fc no longer fits."""
    convs = "input: {shape: [1, 12, 12]}\nlayers:\n  - {name: c, op: conv, out_channels: 2, kernel_size: 3}\n"

    @register_pass("crop-10", "the crop becomes 10x10", requires=("shapes",))
    def crop_10(graph):
        c, _, _ = graph.input_shape
        graph.input_shape = (c, 10, 10)

    out = graphconv.run_passes(graphconv.load_spec(write_spec(convs)), "crop-10,shape-inference")
    assert out.input_shape == (1, 10, 10) and out.node("c").shape == (2, 8, 8)
    assert graphconv.Model(out).map_size(12, 12) == (3, 3)
    with_fc = write_spec(convs + "  - {name: f, op: fc, out_features: 3}\n", "fc.yaml")
    with pytest.raises(PassError, match=r"pass 'crop-10' \(.*\) broke the IR: .*layer 'f'"):
        graphconv.run_passes(graphconv.load_spec(with_fc), "crop-10")
    with pytest.raises(graphconv.GraphconvError, match=r"the input shape is \(C, H, W\), three whole numbers"):
        graphconv.load_spec(with_fc).input_shape = (10, 10)
