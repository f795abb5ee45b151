"""The devices graphconv runs on: one `Backend` object each, found by name.

A backend is all the runtime knows about a device: whether it can run here (and why
not), moving arrays to and from it, waiting for it, allocating on it, storing a layer's
weights the way its kernels want them, and finding an op's kernel for it. An `Executor`
resolves its backend once and never asks which device it is on; the CLI offers
`device_choices()`. Adding a device is a `Backend` subclass given to `register_backend`
(from a plugin too: `--plugin my_device.py --device mydev`), whose kernels are found by
`kernel_function`: by default `run_<op>` (and `bind_`, `prepare_`, `describe_`) in a
`<device>.py` module in each op's folder; a backend whose kernels live elsewhere (one
made of each op's numpy `reference`) overrides that one method (docs/architecture.md).

numba.cuda is imported only when the CUDA backend is asked something, so a CPU-only
machine (or one without numba-cuda) never loads it.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numba
import numpy as np

from graphconv.errors import GraphconvError, shown
from graphconv.ops import OpDef, aligned
from graphconv.threads import check_not_forked_after_openmp, start_numba_threads

AUTO = "auto"
AUTO_PREFERENCE = ("cuda", "cpu")  # what "auto" picks: the first usable one


class Backend:
    """One device. Subclasses provide the array verbs; an op's kernel functions are found
    by `kernel_function`, the one method a backend with kernels of its own kind overrides."""

    name: str
    # The passes run on a network before it runs here (`runtime.Executor`), on its copy:
    # the CPU's fuse inverted-residual blocks into one op its kernels have, and mark the
    # values its channels-last kernels store that way.
    binding_passes: tuple[str, ...] = ()
    # Whether a run's input and result are copies, made on the way in and out (a GPU's
    # memory is not the host's): the Executor then keeps one input and one output array
    # per plan instead of allocating them on every run.
    copies_run_values: bool = False

    def status(self) -> str | None:
        """None when this device can run kernels here; otherwise why not, in a sentence."""
        raise NotImplementedError

    def to_device(self, x: np.ndarray, into: Any = None) -> Any:
        """A float32, C-contiguous copy of a host array on this device (no copy when it
        already is one and the device is the host); written into `into` (one of this
        device's arrays of x's shape) when given and the device is not the host."""
        raise NotImplementedError

    def to_host(self, x: Any, out: np.ndarray | None = None) -> np.ndarray:
        """`x` as a host array: into `out` (any strides) when given, else a new one
        (or `x` itself, when it is one already)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until every kernel launched so far has finished (for timing)."""
        raise NotImplementedError

    def empty(self, shape: tuple[int, ...]) -> Any:
        """An uninitialised C-contiguous float32 array on this device."""
        raise NotImplementedError

    def can_write_into(self, out: Any) -> bool:
        """Whether kernels can write straight into `out`: one of this device's arrays,
        float32, C-contiguous and writable. Anything else is written by copying."""
        raise NotImplementedError

    @property
    def stores_channels_last(self) -> bool:
        """Whether the runtime stores the values the `channels-last` pass marks that way on
        this device (its kernels for the ops that declare `channels_last` take them)."""
        return "channels-last" in self.binding_passes

    def check_process(self) -> None:
        """Raise a GraphconvError where this process cannot run this device's kernels; start
        what they need. Called as a network is bound to the device."""

    def kernel_function(self, opdef: OpDef, verb: str) -> Callable | None:
        """The op's `<verb>_<name>` for this device (verb: "run", the kernel itself,
        `run(params, weights, inputs, out)`; or its optional hooks "bind", "prepare",
        "describe"), or None where it has none: by default found in the op's
        `<package>.<device>` module (`OpDef.kernel_function`)."""
        return opdef.kernel_function(self.name, verb)

    def kernel(self, opdef: OpDef) -> Callable:
        """The op's `run` function for this device; GraphconvError "op 'x' has no <device>
        kernel (...)" when it has none."""
        run = self.kernel_function(opdef, "run")
        if run is None:
            raise opdef.no_kernel(self.name)
        return run

    def bind(self, opdef: OpDef, params: dict, weights: dict) -> Callable[[list, Any], None]:
        """A layer's call on this device, a function of (inputs, out), made once when a
        network is bound to it: a kernel module may define `bind_<name>(params, weights)` to
        work out per layer, not per run, what its `run` function would on every call (the
        conv's strategy and geometry: 18 us a call, 1-2 ms of a ResNet-50 run); else the
        `run` function with `params` and `weights` fixed."""
        bind = self.kernel_function(opdef, "bind")
        if bind is not None:
            return bind(params, weights)
        return partial(self.kernel(opdef), params, weights)

    def variant(self, opdef: OpDef, params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
        """Which of its strategies the kernel picks for an (N, C, H, W) input ("" when it
        has one), `channels_last` when its input or output is stored that way: a kernel
        module may define `describe_<name>(params, in_shape, channels_last=False) -> str`."""
        describe = self.kernel_function(opdef, "describe")
        if describe is None:
            return ""
        return describe(params, in_shape, channels_last=True) if channels_last else describe(params, in_shape)

    def prepare(self, opdef: OpDef, params: dict, weights: dict[str, np.ndarray]) -> dict:
        """The weights as the op's kernel here wants them stored, on the host, computed once
        when a network is bound (a conv's taps reordered for the direct strategy): a kernel
        module may define `prepare_<name>(params, weights) -> dict`. The kernel must still
        accept the weights as the spec gives them."""
        prepare = self.kernel_function(opdef, "prepare")
        return prepare(params, weights) if prepare else weights

    def prepare_weights(self, opdef: OpDef, params: dict, weights: dict[str, np.ndarray]) -> dict:
        """A layer's weights as this device's kernel keeps them, made once per Executor:
        contiguous float32 (kernels reshape them; a contiguous array makes that free on
        every run), then `prepare`d, then moved to the device."""
        arrays = {key: np.ascontiguousarray(value, np.float32) for key, value in weights.items()}
        return {key: self.to_device(value) for key, value in self.prepare(opdef, params, arrays).items()}

    def binding_state(self) -> Any:
        """What a layer's call bound to its arrays (`bind_values`) depends on besides
        them: the Executor binds again when it changes."""
        return None


class CpuBackend(Backend):
    """The host: numba's CPU kernels on numpy arrays."""

    name = "cpu"
    binding_passes = ("fuse-inverted-residual", "channels-last")

    def status(self) -> str | None:
        return None

    def check_process(self) -> None:
        """A CPU run in a child forked after GNU OpenMP started would kill it: a clear
        error instead (graphconv/threads.py); numba's threads started, keeping the
        caller's OpenMP thread count (PyTorch's)."""
        check_not_forked_after_openmp()
        start_numba_threads()

    def to_device(self, x: np.ndarray, into: Any = None) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_host(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return x
        np.copyto(out, x)
        return out

    def synchronize(self) -> None:
        """CPU kernels have returned when their call does: nothing to wait for."""

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return aligned.empty(shape)  # the kernels' vector loads and stores then stay within cache lines

    def can_write_into(self, out: Any) -> bool:
        return (isinstance(out, np.ndarray) and out.dtype == np.float32
                and out.flags.c_contiguous and out.flags.writeable)

    def binding_state(self) -> int:
        """numba's thread count: the kernels split their jobs for it."""
        return numba.get_num_threads()


NO_NUMBA_CUDA = "numba-cuda is not installed (pip install 'graphconv[cuda]')"


class CudaBackend(Backend):
    """An NVIDIA GPU through numba-cuda (or numba's simulator, NUMBA_ENABLE_CUDASIM=1).
    Activations stay on the device for a whole run: one copy in, one copy out."""

    name = "cuda"
    copies_run_values = True

    @property
    def _cuda(self):
        from numba import cuda  # here: numba-cuda is optional and slow to import
        return cuda

    def status(self) -> str | None:
        import importlib.util

        # numba still ships a numba.cuda of its own, which imports without numba-cuda but is
        # not what the kernels are written for (its simulator lacks aligned shared arrays)
        if importlib.util.find_spec("numba_cuda") is None:
            return NO_NUMBA_CUDA
        try:
            cuda = self._cuda
        except ImportError:
            return NO_NUMBA_CUDA
        try:
            if cuda.is_available():
                return None
        except Exception as err:  # the driver itself can fail to load
            return f"the CUDA driver failed: {err}"
        return ("no CUDA GPU was found (set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels "
                "on numba's simulator)")

    def to_device(self, x: np.ndarray, into: Any = None) -> Any:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if into is None:
            return self._cuda.to_device(x)
        into.copy_to_device(x)
        return into

    def to_host(self, x: Any, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return x.copy_to_host()
        if out.flags.c_contiguous:
            x.copy_to_host(out)
        else:  # a view into a larger host array: copy_to_host needs a contiguous target
            out[...] = x.copy_to_host()
        return out

    def synchronize(self) -> None:
        self._cuda.synchronize()

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self._cuda.device_array(shape, dtype=np.float32)

    def can_write_into(self, out: Any) -> bool:
        return (self._cuda.devicearray.is_cuda_ndarray(out) and out.dtype == np.float32
                and out.is_c_contiguous())


_BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (CpuBackend(), CudaBackend())}


def register_backend(backend: Backend) -> Backend:
    """Make `backend` a device graphconv runs on, by its `name` (`--device NAME`,
    `Model.run(device=NAME)`); returns it. A plugin registers its device as it is
    imported, as it does its passes and ops (imported again, it replaces it)."""
    name = getattr(backend, "name", None)
    if not isinstance(backend, Backend) or not isinstance(name, str) or not name.isidentifier():
        raise GraphconvError(f"register_backend takes a Backend whose name is a word, got {shown(backend)}")
    if name == AUTO or (name in _BACKENDS and not _same_class(_BACKENDS[name], backend)):
        raise GraphconvError(f"device {name!r} is {'a choice of its own' if name == AUTO else 'registered already'}: "
                             "name the backend otherwise")
    _BACKENDS[name] = backend
    return backend


def _same_class(registered: Backend, again: Backend) -> bool:
    """Whether `again` is of the class `registered` is: the same plugin imported again
    (a second command in one process), which registers its device again."""
    return (type(registered).__module__, type(registered).__qualname__) == \
        (type(again).__module__, type(again).__qualname__)


def backend_names() -> tuple[str, ...]:
    """Every device graphconv has kernels for, usable here or not."""
    return tuple(_BACKENDS)


def device_choices() -> tuple[str, ...]:
    """What `--device` accepts: a backend's name, or "auto"."""
    return (*backend_names(), AUTO)


def get_backend(name: str) -> Backend:
    """The backend called `name`, usable or not (see `resolve_backend`)."""
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        raise GraphconvError(f"unknown device {shown(name)} (choose from "
                             f"{', '.join(device_choices())})") from None


def resolve_backend(name: str) -> Backend:
    """The backend to run on: "auto" is the first usable one of AUTO_PREFERENCE (a GPU
    when there is one); a named one must be usable here, or this says why not."""
    if name == AUTO:
        return next(backend for backend in map(get_backend, AUTO_PREFERENCE)
                    if backend.status() is None)
    backend = get_backend(name)
    problem = backend.status()
    if problem:
        raise GraphconvError(f"device {name!r}: {problem}")  # said alike to the CLI's --device and Python's device=
    return backend


def resolve_device(name: str) -> str:
    """`resolve_backend(name).name`, for callers that key things by device name."""
    return resolve_backend(name).name
