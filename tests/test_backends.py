"""The backend registry: names, choosing one ("auto", unusable devices), weights stored
the backend's way, missing kernels named by layer, and numba.cuda left unloaded on CPU."""
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import graphconv
from graphconv import backends
from graphconv.backends import backend_names, device_choices, get_backend, resolve_backend
from graphconv.errors import GraphconvError
from graphconv.ops import aligned, get_op
from graphconv.params import normalize_params
from graphconv.runtime import Executor
from conftest import ROOT, SPECS


def test_names_and_choices():
    assert backend_names() == ("cpu", "cuda")
    assert device_choices() == ("cpu", "cuda", "auto")
    assert all(get_backend(name).name == name for name in backend_names())


@pytest.mark.parametrize("name", ["tpu", "", ["cpu"]])
def test_unknown_device(name):
    with pytest.raises(GraphconvError, match=r"unknown device .* \(choose from cpu, cuda, auto\)"):
        get_backend(name)


def test_auto_prefers_a_usable_gpu(monkeypatch):
    cuda = get_backend("cuda")
    monkeypatch.setattr(cuda, "status", lambda: None)
    assert resolve_backend("auto") is cuda
    monkeypatch.setattr(cuda, "status", lambda: "no CUDA GPU was found")
    assert resolve_backend("auto") is get_backend("cpu")
    with pytest.raises(GraphconvError, match=r"device .cuda.: no CUDA GPU was found"):
        resolve_backend("cuda")
    assert Executor(graphconv.load(SPECS / "lenet.yaml").graph, "auto").device == "cpu"


def test_cpu_weights_are_contiguous_float32_and_prepared():
    """The op's prepare hook runs on contiguous float32 copies (a conv's taps reordered);
    weights an op does not reorder are used in place when they already are float32."""
    cpu = get_backend("cpu")
    conv = get_op("conv")
    params = normalize_params(conv, dict(out_channels=4, kernel_size=3))
    weight = np.asfortranarray(np.random.default_rng(0).standard_normal((4, 2, 3, 3)))
    bias = np.zeros(4, np.float32)
    prepared = cpu.prepare_weights(conv, params, {"weight": weight, "bias": bias})
    assert set(prepared) == {"weight", "weight_kxo", "bias"}  # the spec's order, and packed for "outer"
    assert prepared["weight_kxo"].dtype == np.float32 and prepared["weight_kxo"].flags.c_contiguous
    assert aligned.is_aligned(prepared["weight_kxo"])  # the tile loads it as vectors
    assert prepared["weight"].dtype == np.float32 and prepared["weight"].flags.c_contiguous
    assert prepared["bias"] is bias


def test_cpu_winograd_layers_get_transformed_weights_only():
    """A 3x3, stride-1 conv with enough channels runs "winograd": prepare transforms its
    weights for it and does not also pack them for "outer" (16/9 of the weights is
    enough extra memory)."""
    conv = get_op("conv")
    params = normalize_params(conv, dict(out_channels=32, kernel_size=3, padding=1))
    weight = np.random.default_rng(0).standard_normal((32, 64, 3, 3)).astype(np.float32)
    prepared = get_backend("cpu").prepare_weights(conv, params, {"weight": weight})
    assert set(prepared) == {"weight", "weight_winograd"}
    assert prepared["weight_winograd"].size == 16 * 32 * 64
    assert aligned.is_aligned(prepared["weight_winograd"])


def test_winograd_can_be_turned_off_for_its_memory(monkeypatch):
    """GRAPHCONV_WINOGRAD=0: the 3x3 layers run "outer" on weights packed as before."""
    from graphconv.ops.conv import cpu as conv_cpu
    check = "from graphconv.ops.conv import winograd; print(winograd.ENABLED)"
    for value, shown in (("0", "False"), ("1", "True")):
        env = dict(os.environ, GRAPHCONV_WINOGRAD=value)
        result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
        assert result.stdout.strip() == shown, result.stderr
    monkeypatch.setattr(conv_cpu.winograd, "ENABLED", False)
    conv = get_op("conv")
    params = normalize_params(conv, dict(out_channels=32, kernel_size=3, padding=1))
    weight = np.random.default_rng(0).standard_normal((32, 16, 3, 3)).astype(np.float32)
    assert set(get_backend("cpu").prepare_weights(conv, params, {"weight": weight})) == {"weight", "weight_kxo"}
    assert conv_cpu.choose_strategy(params, (1, 16, 20, 20)) == "outer"


def test_a_missing_kernel_names_the_layer(tmp_path, monkeypatch):
    """An op without a kernel for the device is refused when the Executor is built,
    naming the layer, not half-way through a run."""
    package = tmp_path / "graphconv_test_relu_cpu_only"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cpu.py").write_text("from graphconv.ops.elementwise.cpu import run_relu\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from graphconv.ops import registry
    monkeypatch.setitem(registry._REGISTRY, "relu",
                        replace(get_op("relu"), package="graphconv_test_relu_cpu_only"))
    monkeypatch.setattr(get_backend("cuda"), "status", lambda: None)
    graph = graphconv.load(SPECS / "lenet.yaml").graph
    with pytest.raises(GraphconvError, match="layer 'relu1': op 'relu' has no cuda kernel"):
        Executor(graph, "cuda")
    assert Executor(graph, "cpu").device == "cpu"


CPU_ONLY_RUN = """
import sys
import numpy as np
import graphconv
model = graphconv.load(sys.argv[1])
model.run(np.zeros((1, 1, 32, 32), np.float32), device="cpu")
assert "numba.cuda" not in sys.modules, "a CPU run imported numba.cuda"
print("cpu only")
"""


def test_a_cpu_run_never_imports_numba_cuda():
    result = subprocess.run([sys.executable, "-c", CPU_ONLY_RUN, str(SPECS / "lenet.yaml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cpu only" in result.stdout


def test_resolve_device_is_the_backend_name():
    assert backends.resolve_device("cpu") == "cpu"


def test_cuda_without_numba_cuda_says_to_install_it(monkeypatch):
    """numba still ships a numba.cuda of its own, so the import succeeded and a machine
    without numba-cuda was told "no CUDA GPU was found", and on the simulator that advice
    led to, a traceback."""
    import importlib.util

    from graphconv.backends import NO_NUMBA_CUDA

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "numba_cuda" else find_spec(name, *rest))
    assert get_backend("cuda").status() == NO_NUMBA_CUDA
    with pytest.raises(GraphconvError, match=r"device 'cuda': numba-cuda is not installed \(pip install "):
        resolve_backend("cuda")


REFERENCE_BACKEND = '''
import numpy as np
from graphconv.backends import CpuBackend, register_backend


class Reference(CpuBackend):
    """Every op's numpy reference as its kernel: a device whose kernels are no modules."""
    name = "reference"
    binding_passes = ()

    def kernel_function(self, opdef, verb):
        if verb != "run":
            return None

        def run(params, weights, inputs, out):
            out[...] = opdef.reference(params, weights, [np.asarray(x) for x in inputs])
        return run


register_backend(Reference())
'''


@pytest.fixture
def own_backends(monkeypatch):
    """The backends a test registers are forgotten after it."""
    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))


def test_a_plugin_s_device_runs_from_the_command_and_from_python(tmp_path, rng, own_backends):
    """A backend overriding `kernel_function` alone (its kernels are each op's numpy
    reference, in no `<device>.py` module) registers from a --plugin and runs as
    --device NAME; the device named before the plugin loads is not refused."""
    from conftest import graphconv_in_process, random_input
    (tmp_path / "reference_device.py").write_text(REFERENCE_BACKEND)
    np.save(tmp_path / "x.npy", random_input(rng, (2, 1, 40, 44)))
    assert graphconv_in_process("compile", SPECS / "digits.yaml", "-o", tmp_path / "m").returncode == 0
    maps = {}
    for device in ("cpu", "reference"):
        result = graphconv_in_process("run", tmp_path / "m", "--input", tmp_path / "x.npy", "--plugin",
                                      tmp_path / "reference_device.py", "--device", device, "--output",
                                      tmp_path / f"{device}.npy")
        assert result.returncode == 0, result.stderr
        maps[device] = np.load(tmp_path / f"{device}.npy")
    np.testing.assert_allclose(maps["reference"], maps["cpu"], rtol=1e-4, atol=1e-5)
    assert "reference" in backend_names()
    model = graphconv.load(tmp_path / "m")
    np.testing.assert_allclose(model.run(np.load(tmp_path / "x.npy"), device="reference"), maps["cpu"],
                               rtol=1e-4, atol=1e-5)


def test_an_unknown_device_is_refused_after_the_plugins_load(tmp_path):
    from conftest import graphconv_in_process
    result = graphconv_in_process("run", SPECS / "digits.yaml", "--input", tmp_path / "x.npy", "--device", "tpu",
                                  "--output", tmp_path / "o.npy")
    assert result.returncode == 2 and "unknown device 'tpu' (choose from cpu, cuda, auto)" in result.stderr


@pytest.mark.parametrize("backend, message", [
    ("cpu", "device 'cpu' is registered already"),
    ("auto", "device 'auto' is a choice of its own"),
    ("not a backend", "register_backend takes a Backend whose name is a word"),
])
def test_register_backend_refuses_a_name_taken_or_no_backend(own_backends, backend, message):
    from graphconv.backends import CpuBackend, register_backend

    class Named(CpuBackend):
        name = backend

    with pytest.raises(GraphconvError, match=message):
        register_backend(Named() if backend != "not a backend" else backend)
