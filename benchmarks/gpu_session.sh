#!/usr/bin/env bash
# The GPU checks of issue 21 as one command for a lent machine (the tool library's
# `device run`), sized to its 10-minute command limit: the CUDA kernels against numpy
# on the real GPU, then the benchmark of the issue's targets, all output under $OUT.
#
#   bash benchmarks/gpu_session.sh            # tests, then `gpu_vs_torch.py --quick`
#   FULL=1 bash benchmarks/gpu_session.sh     # tests, then every case (batch 8 too)
#
# The machine's own python3 has PyTorch, numba and numba-cuda and no network. An
# earlier session found its numba-cuda needing numpy < 2.5 there: if the version check
# below fails on numpy, carry a numpy 2.4 wheel (device README: "carry ... .whl") and
# install it first. graphconv itself runs from the checkout (PYTHONPATH), uninstalled.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 GRAPHCONV_TEST_GPU=1
python3 - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import numpy, numba, torch
from numba import cuda
print("numpy", numpy.__version__, "numba", numba.__version__, "torch", torch.__version__)
print("GPU", cuda.get_current_device().name, "SMs", cuda.get_current_device().MULTIPROCESSOR_COUNT)
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { echo "python3 cannot run numba-cuda here: see $OUT/versions.txt"; exit 1; }
timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_gemm_cuda.py tests/test_cuda.py 2>&1 | tee "$OUT/tests.txt"
if [ "${FULL:-0}" = 1 ]; then quick=""; else quick="--quick"; fi
timeout 300 python3 benchmarks/gpu_vs_torch.py $quick --repeats 10 --markdown "$OUT/gpu.md" 2>&1 | tee "$OUT/bench.txt"
