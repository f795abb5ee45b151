"""`prefer_wide_vectors` (via `configure_process`): numba told to use 512-bit vectors
where the CPU has AVX-512, only while nothing has set up numba's compiler yet, and never
over the user's own choice. Each case runs in a fresh process: numba's setup is
per process."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llvmlite import binding as llvm

HAS_AVX512 = bool(llvm.get_host_cpu_features().get("avx512f"))
SPEC = str(Path(__file__).resolve().parent.parent / "specs" / "tinydag.yaml")


def run_python(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter (the environment minus NUMBA_CPU_*, plus `env`);
    it prints one JSON object, returned here."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**clean, **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


NO_DISPATCHER_ON_IMPORT = """
    import json, traceback
    from numba.core import cpu

    def first_dispatcher(self, *args, **kwargs):
        traceback.print_stack()  # the import chain that made it, for the failure message
        raise SystemExit(3)

    cpu.CPUContext.__init__ = first_dispatcher
    import importlib, pkgutil
    import graphconv
    for module in pkgutil.iter_modules(graphconv.__path__):
        if module.name not in ("ops", "__main__"):
            importlib.import_module(f"graphconv.{module.name}")
    print(json.dumps({"made": 0}))
"""


def test_importing_graphconv_compiles_nothing():
    """`import graphconv`, and each of its modules outside graphconv/ops, creates no numba
    function: numba sets up its compiler for the first one, after which
    `configure_process` could no longer choose how it compiles. A module-level @njit
    outside the kernels' own modules (or an import of a kernel module from the runtime,
    the passes or the CLI) would break it. graphconv.sources had two, and every Dask
    worker imports it before its first task loads the model (and configures the
    process): the workers ran narrow vectors, and their maps differed from the
    command's own in the last float32 bits."""
    assert run_python(NO_DISPATCHER_ON_IMPORT) == {"made": 0}


CONFIGURE_THEN_COMPILE = f"    SPEC = {SPEC!r}\n" + """
    import json
    import numpy as np
    import graphconv
    graphconv.configure_process()
    from numba.core.registry import cpu_target
    model = graphconv.compile_model(SPEC)
    x = np.random.default_rng(0).standard_normal((1, 3, 28, 24)).astype(np.float32)
    out = model.run(x)
    print(json.dumps({"features": cpu_target.target_context.codegen()._tm_features,
                      "out": out.ravel().tolist()}))
"""


@pytest.mark.skipif(not HAS_AVX512, reason="the CPU has no AVX-512: nothing to widen")
def test_configure_process_widens_numbas_vectors_and_results_stay():
    wide = run_python(CONFIGURE_THEN_COMPILE)
    narrow = run_python(CONFIGURE_THEN_COMPILE,
                        NUMBA_CPU_FEATURES=llvm.get_host_cpu_features().flatten())
    assert wide["features"].endswith(",-prefer-256-bit")
    assert "prefer-256-bit" not in narrow["features"]  # the user's own target stands
    assert wide["out"] == pytest.approx(narrow["out"], rel=1e-5, abs=1e-6)


COMPILE_THEN_CONFIGURE = """
    import json, warnings
    import numba
    import graphconv

    numba.njit(lambda x: x + 1)(1)  # a notebook that ran a model, or numba code of its own, first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphconv.configure_process()
    from numba.core import config
    print(json.dumps({"warned": [str(w.message) for w in caught], "features": config.CPU_FEATURES}))
"""


@pytest.mark.skipif(not HAS_AVX512, reason="the CPU has no AVX-512: nothing to widen, nothing to miss")
def test_configure_process_after_numba_compiled_says_it_came_too_late():
    """Called after a first run, configure_process widened nothing, silently (numba had
    fixed its compiler's features): it now says so and how to get the speed."""
    late = run_python(COMPILE_THEN_CONFIGURE)
    assert late["features"] is None
    assert len(late["warned"]) == 1 and late["warned"][0].startswith("configure_process() came after numba compiled")
    assert "call graphconv.configure_process() first, before any model runs" in late["warned"][0]


@pytest.mark.skipif(HAS_AVX512, reason="the CPU has AVX-512")
def test_configure_process_leaves_other_cpus_alone():
    assert "prefer-256-bit" not in run_python(CONFIGURE_THEN_COMPILE)["features"]
