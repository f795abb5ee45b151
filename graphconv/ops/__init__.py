"""The op registry and every built-in op, one sub-package each.

Every sub-package of this folder is imported here, which registers its ops: adding an op
is adding a folder, with no list to edit. Plain modules (gemm_cpu, vector_tile,
unsigned_index, cuda_launch) are kernel helpers and are left for the kernels that use
them to import; area_means holds the image reader's kernels (graphconv/sources.py), pixel_blends
the kernel of a map placed on pixels with Gaussian weights (graphconv/georef.py).

The kernel cache is installed first (graphconv/kernel_cache.py): numba picks a kernel's
cache folder as the kernel is defined, and every op folder and kernel helper is imported
after this file. (kernel_cache is no source of any kernel: the sources digest is unaffected.)
"""
import importlib
import pkgutil

from graphconv.kernel_cache import install_kernel_cache

install_kernel_cache()  # before any kernel is defined; graphconv's kernels only

from graphconv.ops.registry import (  # noqa: E402
    Example, NoTorchEquivalent, OpDef, Param, Window, all_ops, get_op, pair, register,
)


def _import_op_folders() -> None:
    """Import each sub-package in name order (pkgutil sorts), so ops register in an
    order that does not depend on the file system."""
    for found in pkgutil.iter_modules(__path__):
        if found.ispkg:
            importlib.import_module(f"{__name__}.{found.name}")


_import_op_folders()

__all__ = ["Example", "NoTorchEquivalent", "OpDef", "Param", "Window", "all_ops", "get_op",
           "pair", "register"]
