"""Let numba's compiler use whole AVX-512 registers in the loops it vectorises itself.

LLVM models most Intel cores with AVX-512 as preferring 256-bit vectors (its
"prefer-256-bit" tuning: early AVX-512 parts slowed their clock for 512-bit code), so
the loops numba vectorises on its own (activations, pooling, depthwise convs, the
conv epilogues, Winograd's transforms) run 8 floats at a time even where the core has
two 512-bit FMA units and could run 16. graphconv's register tiles (`ops/vector_tile.py`)
are written as explicit 16-lane vectors and never had this limit; everything else did.

On an Intel Xeon with two 512-bit FMA units (2 threads, in-place SiLU after a 1x1 conv
16->96 at 112x112): the SiLU pass 0.32 -> 0.18 ms; EfficientNet-B0 at 224, per-layer sums,
8.1 -> 7.2-7.7 ms (docs/performance.md, session 20). ResNet-50 and AlexNet, whose time
is in the register tiles, did not move beyond the noise.

This changes how numba compiles every function of the process compiled after it, the
user's too (same results, other vector widths), so it is part of `configure_process()`,
which is opt-in, and it stands aside where the user chose numba's target themselves
(NUMBA_CPU_NAME or NUMBA_CPU_FEATURES). It takes effect only before numba compiles or
loads its first function, as numba sets up its compiler once per process.
"""
from __future__ import annotations

import os

from graphconv.errors import warn_caller

WIDE_TUNING = "-prefer-256-bit"  # LLVM's X86 tuning flag, switched off


def prefer_wide_vectors() -> bool:
    """Tell numba to compile for this CPU's features with 512-bit vectors preferred, where
    it has AVX-512 and the user set no target of their own. Returns whether it did."""
    if "NUMBA_CPU_NAME" in os.environ or "NUMBA_CPU_FEATURES" in os.environ:
        return False
    from llvmlite import binding as llvm
    from numba.core import config

    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return WIDE_TUNING in (config.CPU_FEATURES or "")  # ours from an earlier call, or the user's
    features = llvm.get_host_cpu_features()
    if not features.get("avx512f"):
        return False
    if compiler_set_up():
        warn_caller("configure_process() came after numba compiled or loaded its first function in this process "
                    "(a model's first run): its loops stay 8 floats wide on this AVX-512 CPU, up to ~10% slower; "
                    "call graphconv.configure_process() first, before any model runs")
        return False
    config.CPU_FEATURES = f"{features.flatten()},{WIDE_TUNING}"
    return True


def compiler_set_up() -> bool:
    """Whether numba has set up its CPU compiler in this process (at its first compile or
    cache load), after which its target features are fixed."""
    from numba.core.registry import cpu_target

    return "_toplevel_target_context" in vars(cpu_target)
