"""The op registry: one `OpDef` per op holds everything graphconv knows about it.

An op is one folder under `graphconv/ops/`: its `__init__.py` calls `register(OpDef(...))`
(parameter schema, shape rule, weights and how to seed them, FLOPs, window, numpy
reference, PyTorch equivalent, examples), and its kernels live beside it, `cpu.py` and
`cuda.py`, each defining `run_<op>(params, weights, inputs, out) -> None`, which writes
the layer's output into `out`: the runtime plans every value's shape and buffer, so a
kernel takes its output size from `out.shape` and allocates only scratch. Nothing else in
graphconv lists ops: `graphconv/ops/__init__.py` imports every sub-package it finds, the
spec loader, shape inference, weight seeding and the PyTorch bridge ask the `OpDef`, and
the tests run every op's examples through its kernels, its reference and PyTorch. So a
new op is usable and tested the moment its folder exists (`docs/adding-an-op.md`).

A folder may register several ops when they share kernel code: `pool` holds maxpool and
avgpool (one separable window walk), `elementwise` the pointwise ops that need no window
(relu, dropout, add, sub, mul, div, concat) and their shared flat-array launch, `activations` the
smooth and piecewise activations, `channels` the ops that move whole channels. An op with
kernels of its own gets its own folder, like `sigmoid`. Plain modules beside the folders
(`gemm_cpu`, `vector_tile`, `unsigned_index`, `fast_math`, `cuda_launch`) are kernel
helpers shared across folders, not ops.

Kernel modules are imported only when a network runs on that device (numba-cuda is
optional), so an op may lack a `cuda.py`: running it there is then a `GraphconvError`
naming the op and the device, never a ModuleNotFoundError.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from graphconv.errors import GraphconvError, ShapeError, shown

Shape = tuple[int, int, int]  # (C, H, W); the batch dimension is implicit everywhere in the IR
REQUIRED = object()


class NoTorchEquivalent(GraphconvError):
    """Raised by an op's `torch` function for parameters PyTorch cannot express (e.g. a
    dilated average pooling): the bridge reports it, the parity tests skip that example."""


@dataclass(frozen=True)
class Param:
    """One spec parameter: its name, its kind and its default (REQUIRED if none).

    Kinds: "int" (>= minimum), "pair" (an int or [h, w], each >= minimum), "sides" (an
    int or [top, left, bottom, right], each >= minimum: a pad's four amounts), "float"
    (finite, or also -inf and inf where `infinite`: a max pool's padding is -inf; at
    least `at_least` where given), "bool", "choice" (one of `choices`).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    minimum: int = 1
    choices: tuple = ()
    doc: str = ""
    default_from: str | None = None  # e.g. a pool's stride defaults to its kernel_size
    infinite: bool = False  # a "float" that may be -inf or inf (never NaN)
    at_least: float | None = None  # the least a "float" may be (a threshold: 0)


@dataclass(frozen=True)
class Window:
    """The sliding window of a spatial op, per axis (h, w): what receptive-field
    analysis and the stride passes need to know about conv and pool layers.

    `padding` is what is added before the first pixel of each axis (top, left) and
    `padding_end` what is added after the last (bottom, right); they differ only for a
    `pad` layer (convs and pools pad symmetrically, and `padding_end` defaults to
    `padding`). Only the near side moves cells: cell 0 of the output starts `padding`
    pixels before the input's first, whatever `padding_end` is; the far side only adds
    windows at the end.

    `floored` is for ops that make their map finer by repeating each input cell's
    window (an upsample, stride 1/f): output cell p's window starts at
    floor(p * stride) - padding, not at p * stride - padding. Receptive fields then widen
    each cell's box to cover the f cells that share a window (`graphconv.receptive`), and
    padding analysis floors the taps (`graphconv.dense.padding_reach`). `half_pixel` is
    for a bilinear upsample's (PyTorch's align_corners=False): the window covers every
    phase's taps, but output cell p reads only the two cells around (p + 0.5) * stride
    - 0.5 (one, where that is a cell), so only the outermost rows and columns of a 2x
    upsample read past the map's edge, not the two the window would say. `asymmetric` is
    for a bilinear upsample that samples at p * stride (TF1's resize_bilinear, ONNX's
    asymmetric coordinates): cell floor(p * stride) and the next, or that cell alone
    where p * stride is one, so only its last rows and columns read past the map.

    `beyond` is what the taps past the input's edge read, as verify says it of a crop's
    border: "zeros" (a conv's padding, an average pool counting it), "ignored" (left out
    of a max, or of an average's count), a pad layer's fill ("reflection", "edge copies",
    "-inf", "the value 0.5"), or "interpolation" (an upsample clamping its samples)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    padding_end: tuple[int, int] | None = None
    floored: bool = False
    half_pixel: bool = False
    asymmetric: bool = False
    beyond: str = "zeros"

    def __post_init__(self) -> None:
        if self.padding_end is None:
            object.__setattr__(self, "padding_end", self.padding)

    @property
    def extent(self) -> tuple[int, int]:
        """Input pixels one output pixel spans: dilation * (kernel - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def taps(self, axis: int, position: int) -> list:
        """The input cells output cell `position` reads on `axis` (0: rows, 1: columns);
        outside 0..size-1 they are padding. A stride of 1/f (an upsample's; shift-and-
        stitch's interleave, whose cell p is copy p mod f's cell p // f) reads cell
        floor(p / f). A `half_pixel` or `asymmetric` window's: those its interpolation weighs."""
        if self.half_pixel or self.asymmetric:
            shift = Fraction(1, 2) if self.half_pixel else Fraction(0)
            x = (position + shift) * Fraction(self.stride[axis]) - shift
            first = math.floor(x)
            return [first] if x == first else [first, first + 1]
        start = position * self.stride[axis]
        if self.floored or not isinstance(start, int):
            start = math.floor(start)
        start -= self.padding[axis]
        return [start + k * self.dilation[axis] for k in range(self.kernel[axis])]

    @property
    def symmetric(self) -> bool:
        """Whether both sides of each axis are padded alike."""
        return tuple(self.padding) == tuple(self.padding_end)


@dataclass(frozen=True)
class Example:
    """One parameter set the tests run an op on: `params` as a spec would write them
    (the spec loader fills in the defaults) and the (C, H, W) of each input. The CUDA
    tests run every example on numba's simulator, one Python call per thread, so keep
    the tensors tiny (a few hundred output elements)."""

    params: dict
    inputs: list[Shape]
    batch: int = 2  # images per input: interleave's must be a multiple of its copies

    def out_batch(self, opdef: "OpDef", params: dict) -> int:
        """The output's batch: `batch` times the op's batch_scale."""
        return int(self.batch * Fraction(opdef.batch_scale(params)))


def he_normal_weights(params: dict, weight_shapes: dict[str, tuple],
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The default seeded weights: a He-normal `weight` (std sqrt(2 / fan_in), so
    activations keep their scale through ReLU networks) drawn first, then a small
    uniform `bias`. Weights with any other name need the op's own `init_weights`: a
    random guess could be wrong for them (a batchnorm's running_var must be positive)."""
    unknown = sorted(set(weight_shapes) - {"weight", "bias"})
    if unknown:
        raise GraphconvError(f"the default init_weights only makes 'weight' and 'bias', not "
                             f"{', '.join(repr(k) for k in unknown)}: give the op's OpDef an "
                             f"init_weights")
    arrays = {}
    if "weight" in weight_shapes:
        shape = weight_shapes["weight"]
        fan_in = int(np.prod(shape[1:]))
        arrays["weight"] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if "bias" in weight_shapes:
        arrays["bias"] = rng.uniform(-0.1, 0.1, weight_shapes["bias"])
    return arrays


@dataclass(frozen=True)
class OpDef:
    """Everything about one op.

    shape(params, input_shapes) -> output shape, raising ShapeError(msg) when impossible.
    weight_shapes(params, input_shapes) -> {name: shape} of the weights it expects
        (None: the op has no weights).
    init_weights(params, weight_shapes, rng) -> {name: array}: seeded weights for a spec
        without a weights file, drawn from `rng` in a fixed order (default: he_normal_weights).
    reference(params, weights, inputs) -> output: plain numpy, written for clarity, used by tests.
    torch(params, weights, inputs) -> output: the same op in PyTorch, on torch tensors
        (import torch inside, so graphconv never needs it); raise NoTorchEquivalent for
        parameters PyTorch cannot express.
    flops(params, input_shapes, output_shape) -> floating point operations per image.
    window(params, input_shapes) -> Window for spatial ops; None when the op is pointwise.
        A window's stride may be a Fraction: 1/f for an op that makes its map f times
        finer (interleave), which is what receptive-field analysis needs to know of it.
    batch_scale(params) -> how many images of output per image of input (an int, or a
        Fraction below 1): 1 for every op but the two halves of shift-and-stitch. The IR's
        shapes are per image; the runtime's plan, FLOP counts and memory estimates
        multiply by it (graphconv.shapes.batch_scales).
    examples: a few tiny parameter sets every registry-driven test runs.
    onnx(writer, params, inputs, output) -> None: writes the op as standard ONNX nodes for
        `graphconv export` (graphconv.frontends.onnx_export.OnnxWriter: `writer.node(...)`,
        `writer.weight(key)`, `writer.constant(array)`); None: the op cannot be exported.
    The kernels are `run_<name>(params, weights, inputs, out) -> None` in `<package>.cpu`
    and `<package>.cuda`, writing into `out` (a float32 array of the shape `shape` gives,
    batch first, C-contiguous unless the op is `channels_last`, never one of the inputs),
    optionally with `prepare_<name>`, `describe_<name>` and `bind_<name>` beside them; `kernel_name`
    replaces `<name>` there when ops share one kernel. A `graphconv.backends.Backend` finds
    them (`kernel_function`) and calls them (`kernel`, `bind`, `prepare`, `variant`).
    channels_last: "" when the CPU kernel takes NCHW values only; else it takes inputs
        stored channels-last as well as NCHW and writes `out` however it is stored
        (`graphconv.ops.channels_last`), and says at what cost: "any" (either way in,
        either way out, no extra pass: conv), "like-input" (a channels-last output from
        an NCHW input, or the reverse, costs a transposing copy: the activations),
        "into-planes" (a channels-last input into an NCHW output costs nothing extra, its
        rows stored down the planes, the reverse a transposing copy: the pools). The
        `channels-last` pass stores a value that way only between such ops, the output
        of a "like-input" or "into-planes" op only where its input is, and a value an op
        reads in its own output's storage (a "like-input" op's input, a conv's residual)
        only where that output is.
    weights_problem(params, weights) -> str | None: what makes weights of the right shapes
        unusable (a batchnorm's running_var + eps <= 0), checked when weights are attached;
        None: any finite values will do.
    whole_map: every output value depends on statistics of the op's whole input map
        (groupnorm, global_l2norm), which a larger image changes: a network with such a layer cannot
        slide, and the passes that would make it slide refuse it. Or a function of the
        params saying why a layer of those params is such a layer (None where it is not:
        upsample's align_corners); `whole_map_reason` asks either.
    sees_whole_input: (pass, why) for an op whose every output value sees its whole input
        (fc, flatten, globalavgpool), so that a classifier with such a layer gives one
        answer per image, not a map: the pass that makes a layer of it slide over a larger
        image (fc-to-conv), and why a finer stride or a tile means nothing to it unconverted.
    fixes_input_size: a layer of it takes only the size it was built for (fc's weights are
        of the crop's C x H x W; flatten's output length is), and a network through it
        returns (N, K) vectors.
    per_element: each output value is a function of the input value at its place alone
        (relu, sigmoid, clip; not prelu, whose slope is per channel, nor softmax): such a
        layer gives the same values whatever shape its input is read as, so a flatten
        before it and an fc after it can go (remove-flatten), and it slides. The registry
        test checks the reference does not care.
    padding_value(params) -> float | None: the value a layer's own padding stands for, so
        that a constant pad layer of it in front is the same as the layer padding more
        (fold-pad folds it in): 0 for a conv, -inf for a maxpool, 0 for an avgpool that
        counts its padding; None where no value is (an avgpool that does not count it; a
        ceil_mode pool, whose last window's place depends on where the padding starts).
        The registry test checks it on every padded example.
    gives_probabilities: its outputs are probabilities, 0..1 (softmax, sigmoid): a
        network ending in it draws heatmaps on a fixed 0..1 scale.
    keeps_values: its output holds its input's values, moved at most (identity, dropout,
        flatten, interleave): a network's probabilities stay probabilities through it.
    """

    name: str
    doc: str
    params: tuple[Param, ...]
    shape: Callable[[dict, list[Shape]], Shape]
    reference: Callable[[dict, dict, list[np.ndarray]], np.ndarray]
    flops: Callable[[dict, list[Shape], Shape], int]
    package: str
    arity: tuple[int, int | None] = (1, 1)
    weight_shapes: Callable[[dict, list[Shape]], dict[str, tuple]] | None = None
    init_weights: Callable[[dict, dict[str, tuple], np.random.Generator],
                           dict[str, np.ndarray]] = he_normal_weights
    window: Callable[[dict, list[Shape]], Window | None] = lambda params, shapes: None
    batch_scale: Callable[[dict], int | Fraction] = lambda params: 1
    torch: Callable[[dict, dict, list], Any] | None = None
    examples: tuple[Example, ...] = ()
    onnx: Callable[[Any, dict, list[str], str], None] | None = None
    kernel_name: str | None = None
    channels_last: str = ""
    whole_map: bool | Callable[[dict], str | None] = False
    internal: bool = False  # made by passes only (shift-and-stitch's halves): not offered to spec writers
    sees_whole_input: tuple[str, str] | None = None
    fixes_input_size: bool = False
    per_element: bool = False
    padding_value: Callable[[dict], float | None] | None = None
    gives_probabilities: bool = False
    keeps_values: bool = False
    weights_problem: Callable[[dict, dict], str | None] | None = None

    def whole_map_reason(self, params: dict) -> str | None:
        """Why a layer of these params cannot slide (a verb phrase after the op's name), or None."""
        if callable(self.whole_map):
            return self.whole_map(params)
        return ("takes statistics of its whole map, so on a larger image they are the image's, not each crop's"
                if self.whole_map else None)

    def kernel_function(self, device: str, verb: str) -> Callable | None:
        """`<verb>_<name>` (verb: run, bind, prepare, describe; `kernel_name` for `<name>`
        where ops share a kernel) in this op's `<package>.<device>` module, or None where
        the module or the function is not there. An ImportError raised inside an existing
        kernel module (a typo, a missing dependency) is a bug and keeps its traceback."""
        module_name = f"{self.package}.{device}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            return None
        return getattr(module, f"{verb}_{self.kernel_stem}", None)

    def no_kernel(self, device: str) -> GraphconvError:
        """"op 'x' has no <device> kernel", saying where it was looked for: the function
        a kernel module lacks, or the module that is not there (a plugin op registered
        from one file, whose kernels have no package to live in, told so)."""
        module_name = f"{self.package}.{device}"
        try:
            importlib.import_module(module_name)
            where = f"{module_name} has no run_{self.kernel_stem}"
        except ModuleNotFoundError:
            where = f"no module {module_name}"
            try:
                package = importlib.util.find_spec(self.package)
            except (ImportError, ValueError):  # its parent not importable; a module without a spec
                package = None
            if package is not None and package.submodule_search_locations is None:
                where += f" ({self.package} is a module, not a package: kernels live in {self.package}/{device}.py)"
        return GraphconvError(f"op '{self.name}' has no {device} kernel ({where})")

    @property
    def kernel_stem(self) -> str:
        return self.kernel_name or self.name

    def arity_problem(self, count: int) -> str | None:
        """What is wrong with `count` inputs for this op, or None: one message for the
        spec loader, the ONNX importer and the IR's check."""
        low, high = self.arity
        if low <= count and (high is None or count <= high):
            return None
        expected = str(low) if low == high else f"at least {low}"
        return f"{self.name} takes {expected} {'input' if expected == '1' else 'inputs'}, got {count}"

    @property
    def has_weights(self) -> bool:
        return self.weight_shapes is not None

    def seeded_weights(self, params: dict, in_shapes: list[Shape],
                       rng: np.random.Generator) -> dict[str, np.ndarray]:
        """float32 weights from `init_weights` for a layer on `in_shapes` ({} when the op
        has none): what a spec without a weights file gets, and what the tests run on."""
        if not self.has_weights:
            return {}
        arrays = self.init_weights(params, self.weight_shapes(params, in_shapes), rng)
        return {key: np.asarray(value, dtype=np.float32) for key, value in arrays.items()}



_REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Add `op` to the registry. Its own package registering it again replaces it (a
    module reloaded in a notebook, importlib.reload, as it is edited); another's is refused."""
    existing = _REGISTRY.get(op.name)
    if existing is not None and existing.package != op.package:
        raise GraphconvError(f"op {op.name!r} is already registered by {existing.package}; {op.package} registers "
                             "it again (rename one)")
    alias = OP_ALIASES.get(re.sub(r"[_\-\s]", "", op.name.lower()))
    if alias is not None and alias != op.name:  # its spec name would be read as the other op's
        raise GraphconvError(f"op {op.name!r} is listed in OP_ALIASES (graphconv/ops/registry.py) as another name "
                             f"for {alias!r}: take that entry out, or name the op otherwise")
    _REGISTRY[op.name] = op
    return op


# other frameworks' names for graphconv's ops (PyTorch modules, Caffe layers, ONNX op types),
# compared lower-case without '_' or '-': what an unknown op's "did you mean" offers. A name
# that is an op's own written that way (LeakyReLU, GELU, Mul) needs no entry: it is matched first
OP_ALIASES = {
    "linear": "fc", "innerproduct": "fc", "gemm": "fc", "dense": "fc", "fullyconnected": "fc", "matmul": "fc",
    "conv2d": "conv", "convolution": "conv",
    "maxpool2d": "maxpool", "pooling": "maxpool", "avgpool2d": "avgpool", "averagepool": "avgpool",
    "averagepool2d": "avgpool", "globalaveragepool": "globalavgpool", "adaptiveavgpool2d": "globalavgpool",
    "globalavgpool2d": "globalavgpool", "batchnorm2d": "batchnorm", "batchnormalization": "batchnorm",
    "bn": "batchnorm", "dropout2d": "dropout", "relu6": "clip", "hardtanh": "clip",
    "localresponsenorm": "lrn", "concatenate": "concat", "cat": "concat",
    "eltwise": "add", "sum": "add", "resize": "upsample", "interpolate": "upsample",
    "upsamplingnearest2d": "upsample", "pixelshuffle": "depth_to_space", "pixelunshuffle": "space_to_depth",
    "swish": "silu", "groupnormalization": "groupnorm", "layernormalization": "layernorm", "zeropad2d": "pad",
    "constantpad2d": "pad", "reflectionpad2d": "pad", "multiply": "mul", "subtract": "sub",
}


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise GraphconvError(unknown_op_message(name)) from None


def user_ops() -> list[str]:
    """The ops a spec may name: every registered op but the internal ones passes make."""
    return sorted(name for name, op in _REGISTRY.items() if not op.internal)


def unknown_op_message(name: Any) -> str:
    """"unknown op 'Conv': did you mean 'conv'? (known: ...)", the known ops being the
    user-facing ones; the suggestion matches case and '_' / '-' loosely, other
    frameworks' names (OP_ALIASES: linear, max_pool, BatchNorm2d...) and near misses."""
    known = user_ops()
    hint = _op_suggestion(name, known)
    if hint:
        return f"unknown op {shown(name)}: did you mean {hint!r}? (known: {', '.join(known)})"
    return (f"unknown op {shown(name)} (known: {', '.join(known)}; an op a plugin registers needs that plugin: "
            "--plugin FILE)")


def _op_suggestion(name: Any, known: list[str]) -> str | None:
    if not isinstance(name, str):
        return None
    import difflib

    def squashed(text: str) -> str:
        return re.sub(r"[_\-\s]", "", text.lower())

    loose = {squashed(op): op for op in known}
    key = squashed(name)
    if key in loose:
        return loose[key]
    if key in OP_ALIASES and OP_ALIASES[key] in known:
        return OP_ALIASES[key]
    close = difflib.get_close_matches(key, list(loose) + list(OP_ALIASES), n=1, cutoff=0.75)
    if close:
        return loose.get(close[0]) or OP_ALIASES[close[0]]
    return None


def all_ops() -> list[OpDef]:
    return list(_REGISTRY.values())


# ---- small helpers shared by the op definitions -------------------------------------------

def onnx_as(op_type: str, **attrs) -> Callable:
    """The `onnx` writer of an op that is one ONNX node on the same inputs."""
    def write(writer, params: dict, inputs: list[str], output: str) -> None:
        writer.node(op_type, inputs, output, **attrs)
    return write


def onnx_window_attrs(params: dict) -> dict:
    """kernel_shape, strides, pads and dilations of a conv or pooling layer, as ONNX
    writes them (pads: top, left, bottom, right). Dilations of 1, the default, are left
    out: AveragePool has the attribute from op set 19 only, and onnx's version converter
    (the way to an older TensorRT's op set 17) refused every file with a global pool."""
    (ph, pw) = pair(params["padding"])
    dilation = list(pair(params["dilation"]))
    return dict(kernel_shape=list(pair(params["kernel_size"])), strides=list(pair(params["stride"])),
                pads=[ph, pw, ph, pw], **({"dilations": dilation} if dilation != [1, 1] else {}))


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def sliding_output(size: int, kernel: int, stride: int, padding: int, dilation: int,
                   padding_end: int | None = None) -> int:
    """Output length of a window sliding over `size` inputs padded by `padding` before
    and `padding_end` (default: `padding`) after; rounds down like PyTorch and ONNX."""
    end = padding if padding_end is None else padding_end
    return (size + padding + end - dilation * (kernel - 1) - 1) // stride + 1


def window_output(window: Window, in_shape: Shape, what: str) -> tuple[int, int]:
    """Output (H, W) of a window over in_shape, or a ShapeError saying why none fits."""
    _, h, w = in_shape
    out = []
    for axis, size in zip((0, 1), (h, w)):
        extent = window.extent[axis]
        padded = size + window.padding[axis] + window.padding_end[axis]
        if extent > padded:
            raise ShapeError(
                f"{what} of {window.kernel[0]}x{window.kernel[1]} (dilation {window.dilation[0]}x"
                f"{window.dilation[1]}, {describe_padding(window)}) does not fit in its {h}x{w} input",
                param="kernel_size")
        out.append(sliding_output(size, window.kernel[axis], window.stride[axis],
                                  window.padding[axis], window.dilation[axis], window.padding_end[axis]))
    return out[0], out[1]


def describe_padding(window: Window) -> str:
    """"padding 1x2" for a symmetric window, "padding top 0, left 0, bottom 1, right 1"
    for one that pads the two sides of an axis differently."""
    if window.symmetric:
        return f"padding {window.padding[0]}x{window.padding[1]}"
    (top, left), (bottom, right) = window.padding, window.padding_end
    return f"padding top {top}, left {left}, bottom {bottom}, right {right}"


def affine_weight_shapes(params: dict, shapes: list[Shape]) -> dict[str, tuple]:
    """A normalisation's per-channel `weight` and `bias` (layernorm, groupnorm)."""
    c = shapes[0][0]
    return {"weight": (c,), "bias": (c,)}


def seeded_affine(params: dict, weight_shapes: dict[str, tuple], rng: np.random.Generator) -> dict:
    """Seeded per-channel weight and bias that are not the identity (weight 1, bias 0),
    so a kernel that dropped either term fails its test."""
    (c,) = weight_shapes["weight"]
    return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.uniform(-0.5, 0.5, c)}


def normalization_shape(params: dict, shapes: list[Shape]) -> Shape:
    """The shape rule of a normalisation (batchnorm, layernorm): its input's shape, once
    its eps, which is added to a variance under a square root, is not negative."""
    if params["eps"] < 0:
        raise ShapeError(f"eps must be >= 0 (it is added to a variance), got {params['eps']}")
    return shapes[0]


def same_spatial(shapes: list[Shape], what: str) -> None:
    first = shapes[0][1:]
    for s in shapes[1:]:
        if s[1:] != first:
            raise ShapeError(f"{what} needs inputs of one spatial size, got "
                             + ", ".join(f"{a}x{b}" for _, a, b in shapes))


def numel(shape: Shape) -> int:
    """Values in a tensor of `shape`, in Python's exact integers (np.prod's int64
    overflowed to a negative count on a 4e9 x 4e9 image, which `inspect` took the log of)."""
    return math.prod(int(v) for v in shape)
