"""The devices graphconv runs on: one `Backend` object each, found by name.

A backend is all the runtime knows about a device: whether it can run here (and why
not), moving arrays to and from it, waiting for it, allocating on it, storing a layer's
weights the way its kernels want them, and finding an op's kernel for it. An `Executor`
resolves its backend once and never asks which device it is on; the CLI offers
`device_choices()`. Adding a device is adding a `Backend` subclass to `_BACKENDS` and a
`<device>.py` kernel module to each op folder.

numba.cuda is imported only when the CUDA backend is asked something, so a CPU-only
machine (or one without numba-cuda) never loads it.
"""
from __future__ import annotations

from typing import Any, Callable

import numba
import numpy as np

from graphconv.errors import GraphconvError, shown
from graphconv.ops import OpDef, aligned

AUTO = "auto"
AUTO_PREFERENCE = ("cuda", "cpu")  # what "auto" picks: the first usable one


class Backend:
    """One device. Subclasses provide the array verbs; weights and kernels are found
    the same way everywhere (through the op's `OpDef`)."""

    name: str
    # Whether the runtime stores the values the `channels-last` pass marks that way on this
    # device (its kernels for the ops that declare `channels_last` take them): the CPU's do.
    stores_channels_last: bool = False
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

    def prepare_weights(self, opdef: OpDef, params: dict, weights: dict[str, np.ndarray]) -> dict:
        """A layer's weights as this device's kernel keeps them, made once per Executor:
        contiguous float32 (kernels reshape them; a contiguous array makes that free on
        every run), then the op's `prepare_<name>` hook for this device (e.g. a conv's
        taps reordered), then moved to the device."""
        arrays = {key: np.ascontiguousarray(value, np.float32) for key, value in weights.items()}
        prepared = opdef.prepare(self.name, params, arrays)
        return {key: self.to_device(value) for key, value in prepared.items()}

    def kernel(self, opdef: OpDef) -> Callable:
        """The op's `run_<name>` for this device; GraphconvError "op 'x' has no <device>
        kernel" when it has none."""
        return opdef.kernel(self.name)

    def binding_state(self) -> Any:
        """What a layer's call bound to its arrays (`bind_values`) depends on besides
        them: the Executor binds again when it changes."""
        return None


class CpuBackend(Backend):
    """The host: numba's CPU kernels on numpy arrays."""

    name = "cpu"
    stores_channels_last = True

    def status(self) -> str | None:
        return None

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
