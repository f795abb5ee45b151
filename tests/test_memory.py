"""The memory budget: sizes, the check, and run_estimate against what a run really holds."""
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import graphconv
from graphconv import memory
from graphconv.errors import GraphconvError
from graphconv.memory import (blas_buffer_bytes, check_fits, check_run_fits, format_size, memory_limit,
                              parse_size, run_estimate, set_memory_limit, weight_bytes)
from graphconv.ops.vector_tile import padded_channels
from graphconv.shapes import infer_shapes
from conftest import SPECS

MB = 1 << 20


@pytest.fixture
def limit():
    """set_memory_limit for one test; the default comes back afterwards."""
    yield set_memory_limit
    set_memory_limit(None)


# ---- the budget ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, nbytes", [("512M", 512 * MB), ("8G", 8 << 30), ("1.5G", int(1.5 * (1 << 30))),
                                          ("1000000", 1000000), ("64k", 64 << 10), (" 2 GiB ", 2 << 30)])
def test_parse_size(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "0", "-1G", "lots", "8X", "1e9"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(GraphconvError, match="--memory-limit"):
        parse_size(text)


def test_check_fits_names_what_and_the_file(limit):
    limit("1M")
    check_fits(MB, "exactly the limit")
    with pytest.raises(GraphconvError) as err:
        check_fits(3 * MB, "a big thing", file="photo.png")
    assert str(err.value) == ("photo.png: a big thing needs about 3.0 MB, over the memory limit of 1.0 MB "
                              "(raise it with --memory-limit, or graphconv.set_memory_limit from Python)")
    with pytest.raises(GraphconvError, match=r"from Python\); read less at a time$"):
        check_fits(3 * MB, "a big thing", hint="read less at a time")


@pytest.mark.parametrize("value", [0, 0.5, -5, float("nan"), float("inf"), "lots", "0.5", "0", True, [1]])
def test_set_memory_limit_refuses_what_is_not_a_size(limit, value):
    with pytest.raises(GraphconvError, match="^the memory limit"):  # not the flag a Python user has not used
        limit(value)
    assert graphconv.set_memory_limit is set_memory_limit


def test_the_limit_comes_back_to_the_default(limit):
    default = memory_limit()
    limit("64M")
    assert memory_limit() == 64 * MB
    limit(None)
    assert memory_limit() == default == memory.default_memory_limit()


def _cgroups(root, membership: str, limits: dict[str, str]):
    from conftest import cgroup_tree
    return memory.cgroup_memory_limit(*cgroup_tree(root, membership, limits))


@pytest.mark.parametrize("membership, limits, expected", [
    # v2: the job's own limit, an ancestor's lower one, "max" for none
    ("0::/slurm/job_7\n", {"slurm/job_7/memory.max": str(8 << 30), "slurm/memory.max": "max"}, 8 << 30),
    ("0::/slurm/job_7\n", {"slurm/job_7/memory.max": "max", "slurm/memory.max": str(6 << 30)}, 6 << 30),
    ("0::/\n", {"memory.max": "max"}, None),
    # v1 (and a hybrid host, whose v2 line has no memory controller): the memory controller's
    ("4:memory:/job_3\n0::/\n", {"memory/job_3/memory.limit_in_bytes": str(4 << 30)}, 4 << 30),
    ("4:cpuacct,memory:/job_3\n", {"memory/job_3/memory.limit_in_bytes": "9223372036854771712"}, None),
    # a container's namespaced mount: the path named is not there, its own limit is at the root
    ("4:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": str(2 << 30)}, 2 << 30),
    ("", {}, None),
])
def test_the_default_limit_follows_a_container_s_or_a_batch_job_s_cgroup(tmp_path, membership, limits, expected):
    """A SLURM job given 8 GB of a 512 GB node, its default budget sized to the node, tiled
    nothing and was killed by the kernel."""
    assert _cgroups(tmp_path, membership, limits) == expected


def test_the_default_limit_under_a_cgroup_leaves_the_process_its_room_and_says_whose_it_is(monkeypatch, limit):
    """AlexNet in a 600 or 700 MB job ran tiles sized to 80% of it, and the process itself
    (some 250 MB) on top was killed by the kernel; the refusal said "raise it with
    --memory-limit", which leads straight to that."""
    limit(None)
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 3 << 30)
    assert memory.physical_memory() == 3 << 30
    assert memory_limit() == int(memory.DEFAULT_SHARE * (3 << 30))  # 80% leaves more than the process's share
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 700 * MB)
    assert memory_limit() == 700 * MB - memory.PROCESS_BYTES
    with pytest.raises(GraphconvError, match=r"over the memory limit of 380\.0 MB, this job's or container's share "
                                             r"of the 700\.0 MB its cgroup allows \(ask its scheduler"):
        check_fits(600 * MB, "a run")
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 300 * MB)
    assert memory_limit() == 75 * MB  # a quarter, not less than nothing
    limit("200M")  # the user's own: no word of the cgroup
    with pytest.raises(GraphconvError) as refused:
        check_fits(600 * MB, "a run")
    assert "cgroup" not in str(refused.value)
    limit(None)
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 1 << 62)  # over the machine's RAM: the RAM
    assert memory.physical_memory() < 1 << 62 and memory_limit() == int(memory.DEFAULT_SHARE * memory.physical_memory())


def test_no_cgroup_file_is_no_limit(tmp_path):
    assert memory.cgroup_memory_limit(tmp_path / "absent", tmp_path) is None


def test_format_size():
    assert [format_size(v) for v in (12, 2048, 5 * MB, 3 << 30, 5 << 40)] == [
        "12 B", "2.0 KB", "5.0 MB", "3.0 GB", "5120.0 GB"]


# ---- run_estimate -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet", "tinydag", "alexnet"])
@pytest.mark.parametrize("compiled", [False, True])
def test_weight_bytes_are_what_the_graph_and_the_cpu_executor_hold(name, compiled):
    model = (graphconv.compile_model if compiled else graphconv.load)(SPECS / f"{name}.yaml")
    executor = model.executor("cpu")
    graph_arrays = {id(a) for n in model.graph.layers() for a in n.weights.values()}
    held = sum(a.nbytes for n in model.graph.layers() for a in n.weights.values())
    held += sum(a.nbytes for s in executor.steps for a in s.weights.values() if id(a) not in graph_arrays)
    assert weight_bytes(model.graph) == held


def test_weight_bytes_of_a_graph_without_weights_yet_come_from_the_shapes():
    model = graphconv.load(SPECS / "lenet.yaml")
    graph = model.graph.copy()
    for node in graph.layers():
        if node.weights:
            graph.set_weights(node, **{key: None for key in node.weights})
    assert weight_bytes(graph) == weight_bytes(model.graph)


WIDE = """
    name: wide
    input: {shape: [3, 32, 32]}
    layers:
      - {name: c1, op: conv, out_channels: 32, kernel_size: 3, padding: 1, activation: relu}
      - {name: c2, op: conv, out_channels: 32, kernel_size: 3, padding: 1}
      - {name: p2, op: maxpool, kernel_size: 2}
      - {name: c3, op: conv, out_channels: 64, kernel_size: 1}
      - {name: c4, op: conv, out_channels: 10, kernel_size: 16}
"""

MEASURE_RSS = textwrap.dedent("""
    import ctypes, gc, json, sys
    import numpy as np
    import graphconv
    from graphconv.memory import blas_buffer_bytes, run_estimate, weight_bytes

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    def load(spec, compiled):
        return graphconv.compile_model(spec) if compiled else graphconv.load(spec)

    results = []
    for spec, compiled, batch, h, w in json.loads(sys.argv[1]):
        shape = (batch, load(spec, compiled).crop_shape[0], h, w)
        load(spec, compiled).run(np.full(shape, 0.5, np.float32))  # loads every kernel this run uses
        model = load(spec, compiled)  # a fresh one: nothing kept from the run above
        model.executor("cpu")
        gc.collect()  # the models before, freed now: the collector freeing them during the run hid its growth
        gc.disable()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # the heap compiling the kernels left: back to the system
        base = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak starts again from here
        out = model.run(np.full(shape, 0.5, np.float32))
        measured = status("VmHWM") - base
        gc.enable()
        del out
        held_before = weight_bytes(model.graph) + blas_buffer_bytes()  # BLAS's buffers: the first run's
        results.append([measured, run_estimate(model.graph, batch, (h, w)) - held_before])
    print(json.dumps(results))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc")
def test_the_estimate_covers_the_resident_memory_of_a_real_run(write_spec):
    """The whole truth, kernel scratch included: a fresh process whose large allocations
    are all mmapped and handed back when freed (GRAPHCONV_KEEP_MEMORY=0, glibc's mmap
    threshold at 64 KB), so that its peak resident memory during a run, read from
    /proc after resetting it, is what the run held. The kernels are loaded, BLAS's
    buffers touched and the weights allocated before the peak is reset, so the
    estimate without those is what it is compared with. The runs take one numba thread
    (the estimate still counts every usable CPU's scratch): on a loaded machine one
    thread can take every job of a parallel loop, and the other's scratch is then never
    touched, even in the most of three runs (AlexNet at 320x288 held 3.0-3.1 MB under
    parallel test runs, 4.7-4.8 MB otherwise, 4.5 on one thread, against an estimate of
    7.6). One thread always does every job, so one run is enough. Compiling the kernels
    (an empty kernel cache, as on CI) leaves free heap that later small allocations
    reuse without a page fault, so the process hands it back first (`malloc_trim`);
    even so a fresh-clone CI run under load measured 3.7 MB on one thread, so the bound
    is 2.5x the measured peak (1.3-1.7x here, warm or cold). The cyclic garbage collector
    is run before and kept off during the run: a fresh-clone CI run once measured AlexNet
    at 1.0 MB (not reproduced in four runs, cold or warm), and the collector freeing the
    earlier models' buffers while the run grew is one way to hide the growth."""
    runs = [[str(SPECS / "lenet.yaml"), True, 1, 256, 256],
            [str(SPECS / "lenet.yaml"), True, 3, 197, 131],
            [str(SPECS / "lenet.yaml"), False, 64, 32, 32],
            [str(SPECS / "tinydag.yaml"), True, 2, 300, 260],
            [str(write_spec(WIDE)), True, 2, 300, 300],  # 27-value patches, Winograd, a 1x1 and a 16x16 conv
            [str(SPECS / "alexnet.yaml"), True, 1, 320, 288]]
    env = dict(os.environ, GRAPHCONV_KEEP_MEMORY="0", MALLOC_MMAP_THRESHOLD_="65536",
               MALLOC_TRIM_THRESHOLD_="65536", NUMBA_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", MEASURE_RSS, json.dumps(runs)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for (measured, estimate), run in zip(json.loads(done.stdout), runs):
        assert measured <= estimate <= 2.5 * measured, (run, measured, estimate)


@pytest.mark.parametrize("name, compiled, batch, hw", [
    ("lenet", False, 1, (32, 32)),
    ("lenet", False, 5, (32, 32)),
    ("lenet", True, 2, (100, 76)),
    ("tinydag", False, 3, (28, 24)),
    ("tinydag", True, 2, (90, 61)),
])
def test_the_estimate_covers_the_weights_and_the_largest_activation_of_a_run(name, compiled, batch, hw, rng):
    """Every layer run through its numpy reference (the real values, whatever the runtime
    does with them): the estimate holds at least the weights, the input, the output and
    the largest activation together."""
    model = (graphconv.compile_model if compiled else graphconv.load)(SPECS / f"{name}.yaml")
    x = rng.standard_normal((batch, model.crop_shape[0], *hw)).astype(np.float32)
    values = {model.graph.input.name: x}
    for node in model.graph.layers():
        values[node.name] = node.opdef.reference(node.params, node.weights, [values[s.name] for s in node.inputs])
    largest = max(np.asarray(v, np.float32).nbytes for v in values.values())
    weights = sum(a.nbytes for node in model.graph.layers() for a in node.weights.values())
    output = np.asarray(values[model.graph.output.name], np.float32).nbytes
    assert run_estimate(model.graph, batch, hw) >= weights + x.nbytes + largest + output


def test_alexnet_at_384_against_a_hand_count():
    """Worked out by hand for the one-tower AlexNet of specs/alexnet.yaml, compiled:
    61,100,840 parameters, plus the executor's packed copies of conv1 and conv2's weights
    for "outer" (23,232 + 307,200) and of fc8-as-conv's (4096 x 1000, its outputs padded to
    whole vectors: 4096 x 1008 with 16 lanes), and the Winograd-transformed weights of
    conv3-5, 16 x C x O each (1,179,648 + 1,572,864 + 1,048,576); fc6 and fc7, over
    PACK_MAX_WEIGHTS, would be packed only by a run taking them through the conv's
    "outer" strategy, and at 384 they stream. At 384x384 the largest moment is
    conv1's 64x95x95 output beside norm1's (relu1 is fused into conv1), with the
    3x384x384 input still held by the caller."""
    model = graphconv.compile_model(SPECS / "alexnet.yaml")
    fc8_packed = 4096 * padded_channels(1000)
    weights = 4 * (61_100_840 + 23_232 + 307_200 + fc8_packed + 1_179_648 + 1_572_864 + 1_048_576)
    activations = 4 * (3 * 384 * 384 + 2 * 64 * 95 * 95)
    by_hand = weights + activations
    assert weight_bytes(model.graph) == weights
    estimate = run_estimate(model.graph, 1, (384, 384))
    assert by_hand <= estimate <= 1.5 * by_hand
    run_alone = estimate - weights - blas_buffer_bytes()  # activations and conv scratch
    assert activations <= run_alone <= 3 * activations


def test_the_estimate_grows_with_the_image_and_the_batch():
    graph = graphconv.compile_model(SPECS / "lenet.yaml").graph
    fixed = weight_bytes(graph) + blas_buffer_bytes()
    one = run_estimate(graph, 1, (256, 256)) - fixed
    assert run_estimate(graph, 4, (256, 256)) - fixed >= 3.5 * one
    assert run_estimate(graph, 1, (512, 512)) - fixed >= 3.5 * one


def test_a_shift_and_stitch_model_runs_every_shifted_copy_at_once():
    plain = graphconv.compile_model(SPECS / "lenet.yaml")
    fine = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    assert fine.stitch_copies == 4
    from graphconv.runtime import make_plan
    copies = make_plan(fine.graph, 1, (200, 200), check_weights=False)
    batch_of_four = make_plan(plain.graph, 4, (200, 200), check_weights=False)
    assert copies.buffer_bytes >= batch_of_four.buffer_bytes, "the four copies' activations are live at once"
    one = make_plan(plain.graph, 1, (200, 200), check_weights=False)
    extra = run_estimate(fine.graph, 1, (200, 200)) - run_estimate(plain.graph, 1, (200, 200))
    assert extra >= batch_of_four.buffer_bytes - one.buffer_bytes, "the estimate counts the copies"


def test_the_estimate_is_arithmetic_only():
    """VGG-16 on a 20000x20000 image would need tens of GB: estimating it allocates nothing."""
    graph = graphconv.compile_model(SPECS / "vgg16.yaml").graph
    tracemalloc.start()
    try:
        estimate = run_estimate(graph, 2, (20000, 20000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert estimate > 2 * 64 * 20000 * 20000 * 4
    assert peak < MB


def test_an_input_that_does_not_fit_raises_what_infer_shapes_raises():
    graph = graphconv.load(SPECS / "lenet.yaml").graph
    with pytest.raises(GraphconvError) as want:
        infer_shapes(graph, (8, 8), check_weights=False)
    with pytest.raises(GraphconvError) as got:
        run_estimate(graph, 1, (8, 8))
    assert type(got.value) is type(want.value) and str(got.value) == str(want.value)


def test_check_run_fits_refuses_over_the_budget(limit):
    graph = graphconv.compile_model(SPECS / "lenet.yaml").graph
    check_run_fits(graph, 1, (256, 256), "running lenet")
    limit("4M")
    with pytest.raises(GraphconvError, match=r"^model: running lenet on 1x2000x2000 needs about .* MB, "
                                             r"over the memory limit of 4.0 MB"):
        check_run_fits(graph, 1, (2000, 2000), "running lenet on 1x2000x2000", file="model")


def test_a_command_run_in_process_leaves_the_memory_limit_as_it_was(limit, capsys):
    """cli.main in a process that goes on (a notebook, the tests) left its --memory-limit,
    or the default for a command without one, to everything after it: a test's 78 MB
    budget failed the next test in that process."""
    from graphconv.cli import main

    limit("3G")
    assert main(["passes", "--memory-limit", "100M"]) == 0
    assert memory_limit() == 3 << 30
    assert main(["passes"]) == 0
    assert memory_limit() == 3 << 30
    assert main(["passes", "--memory-limit", "lots"]) == 2
    assert memory_limit() == 3 << 30


def _stored(a: np.ndarray, channels_last: bool) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if channels_last else a


@pytest.mark.parametrize("strategy, groups", [("depthwise", 96), ("grouped", 24)])
@pytest.mark.parametrize("in_last, out_last", [(True, True), (True, False), (False, False)])
def test_the_depthwise_and_grouped_kernels_allocate_no_more_than_their_counted_scratch(strategy, groups, in_last,
                                                                                         out_last, rng):
    """The arrays binding the layer to its values and running it allocate (traced:
    numpy's; a kernel's own per-job buffers are numba's and a few KB; the weights' taps
    are prepared before, as an Executor does once) fit in `conv_scratch_bytes`: a
    network ending in a depthwise conv writes a channels-last buffer of the output's
    size before its planes, "grouped" on NCHW values copies the input channels-last too."""
    from graphconv.ops.conv.cpu import _conv_binder
    params = {"out_channels": 96, "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
              "groups": groups, "activation": "none", "bias": True}
    x = _stored(rng.standard_normal((1, 96, 40, 40), dtype=np.float32), in_last)
    weights = {"weight": rng.standard_normal((96, 96 // groups, 3, 3), dtype=np.float32),
               "bias": rng.standard_normal(96, dtype=np.float32)}
    out = _stored(np.empty((1, 96, 40, 40), np.float32), out_last)
    binder = _conv_binder(params, weights, [x], out, strategy)
    binder([x], out)()  # compiles the kernels outside the trace
    tracemalloc.start()
    try:
        binder([x], out)()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    python_objects = 16 << 10  # the calls and argument tuples binding makes
    assert peak <= python_objects + memory.conv_scratch_bytes(params, (96, 40, 40), (96, 40, 40), 1, strategy,
                                                              out_channels_last=out_last)
