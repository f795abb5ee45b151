"""A memory budget, checked before anything big is allocated.

A small file must not take the machine: a 600-byte spec can ask for a conv with a
billion output channels, a 10 KB `.npy` header can claim a 40 GB array, a 450 KB PNG
can decode to 8 GB. Every place that is about to allocate from a size the user
controls asks `check_fits(nbytes, what)` first, and gets a one-line GraphconvError
with the estimate when it is over the limit, instead of a MemoryError minutes later
(or the kernel's OOM killer).

A forward pass is the largest allocation of all: `run_estimate` works out what one
needs from the shapes alone (weights, activations, kernel scratch), and
`check_run_fits` refuses it before the Executor allocates anything.

The limit defaults to DEFAULT_SHARE of the machine's physical memory (or of its cgroup's
limit, where lower: a container, a batch job); the CLI's
`--memory-limit` (e.g. `--memory-limit 8G`) and `set_memory_limit()` change it.
"""
from __future__ import annotations

import functools
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from graphconv.cgroups import CGROUP_MOUNT, lowest_limit
from graphconv.errors import GraphconvError

if TYPE_CHECKING:  # memory is imported everywhere; the IR only for annotations
    from graphconv.ir import Graph, Node

DEFAULT_SHARE = 0.8
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_limit: int | None = None


def physical_memory() -> int:
    """Bytes of RAM this process may use: the machine's (a generous 16 GiB where the OS
    will not say), or less where its cgroup is limited (`cgroup_memory_limit`: a
    container's, a SLURM job's --mem). Sized to the node alone, a job given 8 GB of a
    512 GB node tiled nothing and was killed by the kernel, not refused."""
    job = _cgroup_below_the_ram()
    return job if job is not None else _machine_memory()


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _cgroup_below_the_ram() -> int | None:
    """`cgroup_memory_limit` where it is less than the machine's RAM, else None."""
    job = cgroup_memory_limit()
    return job if job is not None and job < _machine_memory() else None


UNLIMITED = 1 << 60  # cgroup v1 says "no limit" with the largest page multiple under 2^63


@functools.lru_cache(maxsize=8)
def cgroup_memory_limit(membership: str | os.PathLike = "/proc/self/cgroup",
                        mount: str | os.PathLike = CGROUP_MOUNT) -> int | None:
    """The lowest memory limit over this process's cgroup and its ancestors, v2
    (`memory.max`) or v1 (`memory/memory.limit_in_bytes`), or None where none is set
    (`cgroups.lowest_limit`). Read once per process (a job's limit holds for its life;
    reading it took 0.35 ms a budget check)."""
    limit = lowest_limit(_bytes_in("memory.max"), "memory", _bytes_in("memory.limit_in_bytes"), membership, mount)
    return None if limit is None else int(limit)


def _bytes_in(name: str):
    """A cgroup folder -> the byte count its file `name` holds, or None for no limit (v2's
    "max", v1's largest page multiple)."""
    def read(folder: Path) -> int | None:
        text = (folder / name).read_text().strip()
        return int(text) if text.isdigit() and int(text) < UNLIMITED else None
    return read


PROCESS_BYTES = 320 << 20
"""What the process holds outside the budget (the interpreter, numba's compiler and the
kernels, BLAS; measured 185-290 MB): under a cgroup's limit the default budget leaves
it room, where DEFAULT_SHARE alone did not: AlexNet in a 600 or 700 MB job ran tiles
sized to 480 or 560 MB and the kernel killed it."""


def memory_limit() -> int:
    """The current budget in bytes: `set_memory_limit`'s, else `default_memory_limit`."""
    return _limit if _limit is not None else default_memory_limit()


def default_memory_limit() -> int:
    """DEFAULT_SHARE of `physical_memory`; under a cgroup's limit also at most that limit
    less PROCESS_BYTES (at least a quarter of it)."""
    share = int(DEFAULT_SHARE * physical_memory())
    job = _cgroup_below_the_ram()
    return share if job is None else min(share, max(job - PROCESS_BYTES, job // 4))


def _whose_limit() -> str:
    """Where the limit comes from, for messages: a cgroup's (a batch job's, a container's)
    limit is not raised by --memory-limit, which then only lets the kernel kill the run."""
    job = _cgroup_below_the_ram() if _limit is None else None
    if job is None:
        return ""
    return (f", this job's or container's share of the {format_size(job)} its cgroup allows (ask its scheduler "
            "for more memory: past the cgroup's limit the kernel kills the run)")


def set_memory_limit(limit: int | str | None) -> None:
    """Set the budget (bytes, or text such as '512M' / '8G'); None restores the default.
    `graphconv.set_memory_limit` from Python, `--memory-limit` on the command line."""
    global _limit
    if isinstance(limit, str):
        limit = parse_size(limit, "the memory limit")
    elif limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or not limit >= 1
                                or limit == float("inf")):  # below 1 (0.5) it would be 0 bytes
        raise GraphconvError(f"the memory limit is a number of bytes, 1 or more, or a size such as '512M' or '8G', "
                             f"got {limit!r}")
    _limit = None if limit is None else int(limit)


@contextmanager
def memory_limit_set(limit: int | str | None) -> Iterator[None]:
    """The budget `limit` (`set_memory_limit`'s; None: the default) for the block, the
    one before restored after it: a command run in a process that goes on (`cli.main`
    from a notebook, the tests) left its --memory-limit to everything after it."""
    global _limit
    before = _limit
    set_memory_limit(limit)
    try:
        yield
    finally:
        _limit = before


def parse_size(text: str, what: str = "--memory-limit") -> int:
    """'8G' -> 8 GiB, '512M', '1.5G', '1000000' (bytes); a GraphconvError naming `what`
    (the flag, or the Python argument) otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()]) if match else 0
    if size < 1:  # "0", or "0.5": less than a byte
        raise GraphconvError(f"{what}: expected a size such as 512M or 8G, got {text[:40]!r}")
    return size


def format_size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: float, what: str, *, file: str | None = None, hint: str | None = None) -> None:
    """Refuse, before allocating, anything that would need more than the budget; `hint`,
    what else to do, ends the message."""
    limit = memory_limit()
    if nbytes > limit:
        raise GraphconvError(f"{what} needs about {format_size(nbytes)}, over the memory limit of "
                             f"{format_size(limit)}{_whose_limit()} (raise it with --memory-limit, or "
                             f"graphconv.set_memory_limit from Python){'; ' + hint if hint else ''}", file=file)


# ---- what a forward pass needs -------------------------------------------------------------
#
# `run_estimate` is shape arithmetic only: it never builds an Executor or allocates an
# activation, so the CLI can refuse a run (an image of 20000x20000, a batch of 4096, a
# --scales size of 10000) before the first layer fills the machine.

FLOAT_BYTES = 4
ROW_SLACK = 64  # positions a kernel may round a row or a batch up to (tiles, vector lanes)
ACTIVATION_MARGIN = 1.1  # for what the mirror leaves out: allocation rounding, per-thread rows
BLAS_BUFFER_BYTES_PER_THREAD = 8 << 20  # OpenBLAS's packing buffers, touched on first use and kept
BLAS_BUFFER_BYTES_MIN = 32 << 20


def run_estimate(graph: Graph, batch: int, input_hw: tuple[int, int]) -> int:
    """Bytes a CPU forward pass of `batch` images of `input_hw` needs at its peak.

    The sum of: the weights as the CPU executor holds them (`weight_bytes`); what the
    run itself holds at its peak (`run_peak_bytes`: input, activations, output, a
    kernel's scratch), plus ACTIVATION_MARGIN; one more copy of the output, which
    `Model.run` makes when it crops the score map; and `blas_buffer_bytes`. A
    shift-and-stitch model's plan holds its fy * fx shifted copies of the batch between
    its `shift_copies` and `interleave` layers, so they are counted like any activation.

    Measured against runs with every large allocation mmapped (so that the process's
    peak resident memory is what a run holds): AlexNet and VGG-16 at 227 to 2000
    pixels, batches of 1 to 4, held 1.1 to 1.4 times less than this estimate (without
    the weights and the BLAS buffers, held before), never more. Not counted: the
    interpreter, the libraries and the compiled kernels (a few hundred MB, more while
    numba compiles). On CUDA the activations live in GPU memory, so for host memory
    it over-states a CUDA run.

    Raises the ShapeError `infer_shapes` raises when the input does not fit. Costs
    shape arithmetic only (the first call imports the CPU conv kernels' module, for
    the strategy each conv will use)."""
    from graphconv.runtime import make_plan  # here, so that any module may import memory

    plan = make_plan(graph, batch, tuple(input_hw), check_weights=False)
    held = run_peak_bytes(graph, plan) + _array_bytes(plan.output_shape)
    return weight_bytes(graph) + int(ACTIVATION_MARGIN * held) + blas_buffer_bytes()


def check_run_fits(graph: Graph, batch: int, input_hw: tuple[int, int], what: str, *,
                   file: str | None = None, hint: str | None = None) -> None:
    """Refuse a forward pass whose `run_estimate` is over the budget, naming `what`
    (e.g. "running alexnet on 1 image of 384x384"). `Model.run` checks every run so."""
    check_fits(run_estimate(graph, batch, input_hw), what, file=file, hint=hint)


def weight_bytes(graph: Graph) -> int:
    """The weights' bytes as the CPU executor holds them: each layer's arrays (or, for a
    layer with none attached yet, the shapes its op expects), plus what `prepare_conv`
    adds to a conv's: the transformed weights of a "winograd" layer, or the packed copy
    of a weight under the conv's PACK_MAX_WEIGHTS (larger ones the first "outer" run
    packs: `conv_scratch_bytes` counts those)."""
    from graphconv.ops.conv.cpu import prepared_weight_elements
    from graphconv.shapes import infer_shapes

    total = 0
    shapes = None
    for node in graph.layers():
        if not node.opdef.has_weights:
            continue
        weight_shapes = {key: array.shape for key, array in node.weights.items()}
        if not weight_shapes:
            shapes = shapes or infer_shapes(graph, check_weights=False)
            weight_shapes = node.opdef.weight_shapes(node.params, [shapes[s.name] for s in node.inputs])
        total += sum(_product(shape) for shape in weight_shapes.values())
        if node.op == "conv" and "weight" in weight_shapes:
            total += prepared_weight_elements(node.params, tuple(weight_shapes["weight"]))
    return total * FLOAT_BYTES


def layer_workspace_bytes(node: Node, in_shapes: list, out_shape, batch: int, channels_last: bool = False) -> int:
    """Scratch a layer's CPU kernel allocates besides its output: for conv see
    `conv_scratch_bytes` (`channels_last`: whether its output is stored so); for fc, the
    transposed input columns of its weight-streaming product. Other ops keep a row or
    two per thread: not worth counting."""
    if node.op == "fc":
        return _product(in_shapes[0]) * (batch + ROW_SLACK) * FLOAT_BYTES
    if node.op == "conv":
        return conv_scratch_bytes(node.params, in_shapes[0], out_shape, batch, out_channels_last=channels_last)
    return 0


def conv_scratch_bytes(params: dict, in_shape, out_shape, batch: int, strategy: str | None = None, *,
                       out_channels_last: bool = False) -> int:
    """What the CPU conv kernel allocates besides its output, for `strategy` (default:
    the one `choose_strategy` picks, which is shape arithmetic too):

    - stream: patch columns for every position (at most gemm_cpu.STREAM_MAX_POSITIONS);
    - pointwise: per thread the sums of one job's pixels and a vector per input channel
      for the pixels past the last whole vector;
    - direct: a channels-last, padded copy of one group's input, and a row panel per thread;
    - outer: a channels-last, padded copy of the input (every group's at once), per thread
      the sums of one job's pixels (none where its tiles write the outputs in one chunk:
      `outer_writes_directly`), and for weights prepare_conv did not pack
      (PACK_MAX_WEIGHTS and more, or a Winograd layer's) their packed copy, made on the
      first such run;
    - winograd: see `winograd.scratch_floats`;
    - depthwise and grouped into an NCHW output (the network's last layer, or every layer
      with GRAPHCONV_CHANNELS_LAST=0): the output's size, for the channels-last buffer the
      kernel writes before the copy into the planes, and for grouped, the input's, for its
      channels-last copy of an NCHW input (shape arithmetic cannot tell how the input is
      stored, so both are counted whenever the output is NCHW);
    - im2col: column and result buffers for one band of output rows (SCRATCH_FLOATS of
      columns, at least one row), plus those of a shorter last band, which gets its own.
    A strategy this does not know gets the largest of these."""
    from graphconv.ops.conv import winograd
    from graphconv.ops.vector_tile import padded_channels
    from graphconv.ops.conv.cpu import (PACK_MAX_WEIGHTS, POINTWISE_PIXELS, SCRATCH_FLOATS, choose_strategy,
                                        outer_job_floats, outer_jobs, outer_writes_directly, packed_weight_elements,
                                        suits_winograd)
    from graphconv.ops.registry import pair

    c, h, w = in_shape
    _, ho, wo = out_shape
    groups = params["groups"]
    (kh, kw), (ph, pw) = pair(params["kernel_size"]), pair(params["padding"])
    per_group_in, per_group_out = c // groups, params["out_channels"] // groups
    taps = per_group_in * kh * kw
    weights = params["out_channels"] * taps
    panel = taps * (wo + ROW_SLACK) + (w + 2 * pw) * kh * per_group_in
    band_rows = max(1, min(batch * ho, SCRATCH_FLOATS // max(1, taps * wo)))
    last_band_rows = (batch * ho) % band_rows
    scratch = {
        "stream": taps * (batch * ho * wo + ROW_SLACK),
        "pointwise": _threads() * (POINTWISE_PIXELS * (per_group_out + 8) + 8 * per_group_in),
        "direct": batch * (h + 2 * ph) * (w + 2 * pw) * per_group_in + _threads() * panel,
        "im2col": (taps + per_group_out) * (band_rows + last_band_rows) * wo,
        "outer": batch * (h + 2 * ph) * (w + 2 * pw) * c + (
            0 if outer_writes_directly(params, c, out_channels_last) else _threads() * outer_job_floats(
                per_group_out, outer_jobs(batch, ho, wo, per_group_out, _threads(),
                                          4 * taps * padded_channels(per_group_out))[0]))
        + (packed_weight_elements(params, weights) if weights >= PACK_MAX_WEIGHTS or suits_winograd(params, c)
           else 0),  # packed by the first run that needs them (see prepare_conv)
        "winograd": winograd.scratch_floats((batch, c, h, w), params["out_channels"], (ho, wo), _threads()),
        "depthwise": 0 if out_channels_last else batch * params["out_channels"] * ho * wo,
        "grouped": 0 if out_channels_last else batch * (params["out_channels"] * ho * wo + c * h * w),
        "small": 0,
    }
    strategy = strategy or choose_strategy(params, (batch, c, h, w))
    return FLOAT_BYTES * (scratch[strategy] if strategy in scratch else max(scratch.values()))


def blas_buffer_bytes() -> int:
    """OpenBLAS touches pages of its packing buffers the first time a product is large
    enough to need them, and keeps them: measured 16 MB over a VGG-16 run on 2 threads
    (8 MB a thread), in whichever layer first multiplies big matrices. Counted in every
    estimate, as a run on a fresh process pays it."""
    return max(BLAS_BUFFER_BYTES_MIN, BLAS_BUFFER_BYTES_PER_THREAD * _threads())


def run_peak_bytes(graph: Graph, plan) -> int:
    """What `Executor.run` holds at its peak besides the weights, by its `plan`
    (`runtime.make_plan`, shape arithmetic too): the caller's input, the buffers the
    intermediate activations go in, the output, and the largest kernel scratch. Every
    buffer and the output are allocated for the whole run, so the peak is all of them."""
    scratch = max((_layer_scratch(node, plan) for node in graph.layers()), default=0)
    return (_array_bytes(plan.shapes[plan.input]) + plan.buffer_bytes + _array_bytes(plan.output_shape)
            + scratch)


def _layer_scratch(node: Node, plan) -> int:
    images = plan.shapes[node.inputs[0].name][0]
    return layer_workspace_bytes(node, [plan.shapes[s.name][1:] for s in node.inputs],
                                 plan.shapes[node.name][1:], images, node.name in plan.channels_last)


def _array_bytes(shape) -> int:
    return _product(shape) * FLOAT_BYTES


def _product(values) -> int:
    total = 1
    for v in values:
        total *= int(v)
    return total


def _threads() -> int:
    """Threads numba runs a conv on (each keeps a row panel)."""
    from graphconv.threads import kernel_threads
    return kernel_threads()
