"""CUDA kernels against the numpy references, every registered op on each of its
examples. Without a GPU they run on numba's CUDA simulator (conftest sets
NUMBA_ENABLE_CUDASIM=1), which is why the examples are tiny;
`GRAPHCONV_TEST_GPU=1 pytest tests/test_cuda.py` runs them on a real GPU."""
import numpy as np
import pytest

import graphconv
from graphconv.backends import get_backend
from graphconv.errors import GraphconvError
from graphconv.ops import all_ops, get_op
from graphconv.ops.activations import FUSED
from graphconv.runtime import Executor, run_reference
from graphconv.params import normalize_params
from conftest import SPECS, random_input

CUDA = get_backend("cuda")
pytestmark = pytest.mark.skipif(CUDA.status() is not None, reason=f"CUDA unusable: {CUDA.status()}")

EXAMPLES = [pytest.param(op, example, id=f"{op.name}-{i}")
            for op in all_ops() for i, example in enumerate(op.examples)]


@pytest.mark.parametrize("opdef,example", EXAMPLES)
def test_cuda_kernel_matches_reference(opdef, example, rng):
    """An op may have no CUDA kernel (running it there is a clear error): that skips.
    The kernel writes into a NaN-filled device array shaped by the op's shape rule."""
    try:
        kernel = CUDA.kernel(opdef)
    except GraphconvError as err:
        pytest.skip(str(err))
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (example.batch, *s)) for s in example.inputs]
    weights = opdef.seeded_weights(params, example.inputs, rng)
    out_shape = (example.out_batch(opdef, params), *opdef.shape(params, example.inputs))
    out = CUDA.to_device(np.full(out_shape, np.nan, np.float32))
    assert kernel(params, CUDA.prepare_weights(opdef, params, weights), [CUDA.to_device(x) for x in xs],
                  out) is None
    np.testing.assert_allclose(CUDA.to_host(out), opdef.reference(params, weights, xs),
                               rtol=1e-4, atol=1e-5)


def test_whole_network_on_cuda(rng):
    model = graphconv.compile_model(SPECS / "tinydag.yaml")
    x = random_input(rng, (1, 3, 28, 24))
    np.testing.assert_allclose(model.run(x, device="cuda"), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


TINY_CLASSIFIER = """
    name: tiny
    input: {name: data, shape: [2, 6, 6]}
    layers:
      - {name: conv1, op: conv, out_channels: 3, kernel_size: 3}
      - {name: relu1, op: relu}
      - {name: fc2, op: fc, out_features: 10}
"""


def test_output_into_a_host_view_or_a_device_array(rng, write_spec):
    """`out` on CUDA: a strided view into a larger host map is filled by copying; a
    device array is written by the last kernel itself and stays on the device. (A tiny
    network: the simulator runs every CUDA thread in Python, and LeNet took 200 s.)"""
    graph = graphconv.load(write_spec(TINY_CLASSIFIER)).graph
    executor = Executor(graph, "cuda")
    x = random_input(rng, (2, 2, 6, 6))
    want = run_reference(graph, x)
    host = np.zeros((2, 20, 1, 1), np.float32)
    view = host[:, ::2]
    assert executor.run(x, out=view) is view
    np.testing.assert_allclose(host[:, ::2], want, rtol=1e-4, atol=1e-5)
    assert not host[:, 1::2].any()
    device = CUDA.empty(want.shape)
    assert executor.run(x, out=device) is device
    np.testing.assert_allclose(CUDA.to_host(device), want, rtol=1e-4, atol=1e-5)


POOL_EDGE_CASES = [
    ("maxpool", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 7, 6)),
    ("maxpool", dict(kernel_size=[4, 2], stride=[3, 2], dilation=[1, 2], ceil_mode=True), (1, 3, 6)),
    ("avgpool", dict(kernel_size=[3, 2], stride=[2, 3], padding=1, ceil_mode=True), (1, 6, 7)),
    ("avgpool", dict(kernel_size=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False), (2, 7, 5)),
    ("avgpool", dict(kernel_size=2, dilation=[4, 3], stride=1, padding=[2, 1]), (1, 3, 4)),
]


@pytest.mark.parametrize("op,raw,in_shape", POOL_EDGE_CASES)
def test_cuda_pool_windows_hanging_off_the_end(op, raw, in_shape, rng):
    """Beyond the examples: ceil-mode windows past the padding, and the divisors of
    averages whose windows straddle the image, on the CUDA kernel."""
    from graphconv.ops import get_op
    opdef = get_op(op)
    params = normalize_params(opdef, raw)
    x = random_input(rng, (2, *in_shape))
    out = CUDA.to_device(np.full((2, *opdef.shape(params, [in_shape])), np.nan, np.float32))
    CUDA.kernel(opdef)(params, {}, [CUDA.to_device(x)], out)
    np.testing.assert_allclose(CUDA.to_host(out), opdef.reference(params, {}, [x]), rtol=1e-5, atol=1e-6)


def test_cuda_maxpool_propagates_nan_like_the_cpu(rng):
    """A window holding a NaN pools to NaN on the CUDA kernel too, wherever it sits."""
    from graphconv.ops import get_op
    opdef = get_op("maxpool")
    params = normalize_params(opdef, dict(kernel_size=3, stride=2, padding=1))
    x = np.arange(2 * 7 * 8, dtype=np.float32).reshape(1, 2, 7, 8)
    x[0, 0, 0, 0] = x[0, 0, 4, 5] = x[0, 1, 6, 7] = np.nan
    out = CUDA.to_device(np.zeros((1, *opdef.shape(params, [x.shape[1:]])), np.float32))
    CUDA.kernel(opdef)(params, {}, [CUDA.to_device(x)], out)
    np.testing.assert_array_equal(CUDA.to_host(out), opdef.reference(params, {}, [x]))


@pytest.mark.parametrize("exponent", [0.5, -0.5, -1.0, -2.0, 3.0, 1 / 3, 2.5, 0.0])
def test_cuda_pow_gives_cs_nan_and_infinities_like_the_cpu(exponent):
    """A negative value to a fractional power is NaN, 0 to a negative power inf (-0 to an
    odd one -inf), as the CPU kernel, numpy and torch give: spelled out on the GPU so
    that numba's simulator, whose math.pow raises there, agrees."""
    from graphconv.ops import get_op
    opdef = get_op("pow")
    params = normalize_params(opdef, dict(exponent=exponent))
    x = np.array([-2.0, -0.0, 0.0, 0.5, 3.0, np.inf, -np.inf, np.nan, -1.0], np.float32).reshape(1, 9, 1, 1)
    out = CUDA.to_device(np.zeros(x.shape, np.float32))
    CUDA.kernel(opdef)(params, {}, [CUDA.to_device(x)], out)
    np.testing.assert_array_equal(CUDA.to_host(out), opdef.reference(params, {}, [x]))


def test_cuda_fake_quantize_rounds_ties_to_even_and_clamps_like_the_cpu():
    """The GPU's rounding is spelled out (floor, then the tie to the even side): halfway
    values must land where np.rint puts them on the CPU."""
    from graphconv.ops import get_op
    from test_ops import FAKE_QUANTIZE_TIES
    opdef = get_op("fake_quantize")
    params = normalize_params(opdef, dict(scale=0.5))
    x, want = (a.reshape(1, -1, 1, 1) for a in FAKE_QUANTIZE_TIES)
    out = CUDA.to_device(np.zeros(x.shape, np.float32))
    CUDA.kernel(opdef)(params, {}, [CUDA.to_device(x)], out)
    np.testing.assert_array_equal(CUDA.to_host(out), want)


TINY_FCN = """
    name: tiny-fcn
    input: {name: data, shape: [2, 6, 6]}
    layers:
      - {name: conv1, op: conv, out_channels: 3, kernel_size: 3, padding: 1, activation: relu}
      - {name: conv2, op: conv, out_channels: 4, kernel_size: 2}
      - {name: conv3, op: conv, out_channels: 2, kernel_size: 1}
"""


def test_runs_reuse_their_arrays_and_results_stay_the_callers(rng, write_spec):
    """conv2 reads and writes only the Executor's buffers, so it runs as a call bound to
    them once per plan (`bind_values`), and the input and output arrays on the device
    are kept per plan too: each size, and a size seen before, is exact, and a result
    handed back is the caller's, untouched by later runs."""
    graph = graphconv.load(write_spec(TINY_FCN)).graph
    executor = Executor(graph, "cuda")
    results = []
    for size in [(6, 7), (9, 5), (6, 7)]:
        x = random_input(rng, (1, 2, *size))
        results.append((executor.run(x), run_reference(graph, x)))
    for got, want in results:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert any(call is not None for _, _, calls in executor._bound.values() for call in calls)


@pytest.mark.parametrize("op,raw,in_shape", [
    ("softmax", {}, (70, 3, 5)),                      # channels over 2 lanes each; 30 positions: a part block
    ("softmax", {}, (3, 1, 1)),                       # fewer channels than lanes
    ("lrn", dict(size=5), (40, 3, 5)),                # AlexNet's beta = 0.75: the square-root form
    ("lrn", dict(size=4, alpha=0.3, beta=0.6, k=1.5), (9, 2, 3)),
])
def test_cuda_softmax_and_lrn_beyond_the_examples(op, raw, in_shape, rng):
    """The block layouts of softmax (8 positions x 32 channel lanes) and LRN (a thread an
    element) at sizes that do not fill them, against the numpy reference."""
    from graphconv.ops import get_op
    opdef = get_op(op)
    params = normalize_params(opdef, raw)
    x = 3 * random_input(rng, (2, *in_shape))
    out = CUDA.to_device(np.full((2, *in_shape), np.nan, np.float32))
    CUDA.kernel(opdef)(params, {}, [CUDA.to_device(x)], out)
    np.testing.assert_allclose(CUDA.to_host(out), opdef.reference(params, {}, [x]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("raw,in_shape", [
    (dict(out_channels=5, kernel_size=7, padding=3, groups=5), (5, 9, 8)),  # ConvNeXt's, on a map near its size
    (dict(out_channels=8, kernel_size=5, stride=2, padding=2, dilation=2, groups=4), (4, 11, 6)),
])
def test_cuda_depthwise_convs_run_a_thread_per_output(raw, in_shape, rng):
    """Depthwise layers skip the implicit GEMM (one output channel a group would fill one
    row of each tile): `describe` says so, and the result is the reference's."""
    from graphconv.ops import get_op
    from graphconv.ops.conv.cuda import describe_conv
    conv = get_op("conv")
    params = normalize_params(conv, raw)
    x = random_input(rng, (2, *in_shape))
    weights = conv.seeded_weights(params, [in_shape], rng)
    assert describe_conv(params, x.shape) == "depthwise"
    out = CUDA.to_device(np.full((2, *conv.shape(params, [in_shape])), np.nan, np.float32))
    CUDA.kernel(conv)(params, CUDA.prepare_weights(conv, params, weights), [CUDA.to_device(x)], out)
    np.testing.assert_allclose(CUDA.to_host(out), conv.reference(params, weights, [x]), rtol=1e-4, atol=1e-5)


# One tiny layer of each CUDA kernel that ends in `activations/cuda.activate`: the implicit
# GEMM (a conv), the depthwise conv and the batchnorm.
EPILOGUES = [
    pytest.param("conv", dict(out_channels=3, kernel_size=1), (2, 2, 3), id="gemm"),
    pytest.param("conv", dict(out_channels=2, kernel_size=3, padding=1, groups=2), (2, 2, 3), id="depthwise"),
    pytest.param("batchnorm", {}, (2, 2, 3), id="batchnorm"),
]


@pytest.mark.parametrize("activation", FUSED)
@pytest.mark.parametrize("op,raw,in_shape", EPILOGUES)
def test_cuda_epilogues_apply_every_fused_activation(op, raw, in_shape, activation, rng):
    """Every entry of FUSED in each CUDA kernel that applies it as it writes, against the
    op's numpy reference (which calls the activation op's own): the examples fuse only a
    few. Inputs spread over [-24, 24], so relu6's clip at 6, hardswish's bends at +-3 and
    gelu's and silu's negative dips are all reached."""
    opdef = get_op(op)
    params = normalize_params(opdef, dict(raw, activation=activation))
    x = 8 * random_input(rng, (1, *in_shape))
    weights = opdef.seeded_weights(params, [in_shape], rng)
    out = CUDA.to_device(np.full((1, *opdef.shape(params, [in_shape])), np.nan, np.float32))
    CUDA.kernel(opdef)(params, CUDA.prepare_weights(opdef, params, weights), [CUDA.to_device(x)], out)
    np.testing.assert_allclose(CUDA.to_host(out), opdef.reference(params, weights, [x]), rtol=1e-4, atol=1e-5)


def test_layers_bound_before_either_runs_keep_their_own_launches(rng):
    """The Executor binds every layer's launches (grid included) before it runs any.
    Two layers of one kernel with different grids must each launch with their own, also
    on the simulator, whose `kernel[grid, block]` configures the shared kernel object."""
    opdef = get_op("maxpool")
    params = normalize_params(opdef, dict(kernel_size=2, stride=2))
    bound = []
    for shape in [(1, 3, 40, 40), (1, 2, 4, 4)]:  # the small one bound last
        x = random_input(rng, shape)
        out = CUDA.to_device(np.full((1, shape[1], shape[2] // 2, shape[3] // 2), np.nan, np.float32))
        layer = CUDA.bind(opdef, params, {})
        bound.append((layer.bind_values([CUDA.to_device(x)], out), x, out))
    for launch, x, out in bound:
        launch()
        np.testing.assert_array_equal(CUDA.to_host(out), opdef.reference(params, {}, [x]))
