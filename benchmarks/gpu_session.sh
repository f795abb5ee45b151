#!/usr/bin/env bash
# The GPU checks of issue 21 for a lent machine (the tool library's `device run`), in
# stages that each fit its 10-minute command limit; their results are also under $OUT
# (7 files at most: the tool returns 8).
#
#   bash benchmarks/gpu_session.sh check   # versions, then the CUDA kernels against numpy on the GPU
#   bash benchmarks/gpu_session.sh bench   # gpu_vs_torch.py --quick: the issue's three targets
#   bash benchmarks/gpu_session.sh full    # gpu_vs_torch.py, every case (batch 8 too)
#   bash benchmarks/gpu_session.sh tiles   # gpu_tiles.py: each GEMM tile shape on the big layers
#                                          # (TILES_ONLY=@1024: only the layers so named)
#   bash benchmarks/gpu_session.sh ncu     # Nsight Compute on the big tiles: occupancy, stall reasons
#                                          # (NCU_TILES="128x128 r128,64x128" picks which)
#
# Several stages may be named in one call (`check bench`). The machine's own python3 has
# PyTorch, numba and numba-cuda and no network. An earlier session found its numba
# refusing the image's numpy (2.5): where `import numba` fails, each folder of wheels
# under .whl/ (carried: `carry: [".whl"]`, e.g. .whl/np2.4.6/numpy-2.4.6-...whl) is
# tried in turn, installed into /tmp/site-<name> on PYTHONPATH. graphconv is installed
# from the checkout (editable) with the image's own setuptools.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GRAPHCONV_TEST_GPU=1

# numba 0.68 imports under numpy 2.5 but numba-cuda 0.30's compiler does not (np.row_stack
# is gone), so the check compiles and launches a kernel.
numba_imports() {
    python3 -c "import numpy as np; from numba import cuda; k = cuda.jit(lambda a: None); k[1, 1](np.zeros(1, np.float32))" 2>/dev/null
}

carried_numpy() {
    numba_imports && return 0
    echo "numba-cuda cannot compile a kernel with the image's numpy: trying the carried wheels"
    for wheels in .whl/*/; do
        site=/tmp/site-$(basename "$wheels")
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"*.whl || continue
        if PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} numba_imports; then
            export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
            echo "numba imports with the carried wheels in $wheels"
            return 0
        fi
    done
    echo "numba does not import here, with or without the carried wheels"
    return 1
}

versions() {
    python3 - <<'EOF'
import importlib.metadata, numpy, numba, torch
from numba import cuda
device = cuda.get_current_device()
numba_cuda = importlib.metadata.version("numba-cuda")
print("numpy", numpy.__version__, "numba", numba.__version__, "numba-cuda", numba_cuda, "torch", torch.__version__)
print("GPU", device.name, "SMs", device.MULTIPROCESSOR_COUNT)
assert tuple(map(int, numba_cuda.split(".")[:2])) >= (0, 11), "the CUDA GEMM needs numba-cuda 0.11 (aligned shared arrays)"
EOF
}

carried_numpy || exit 1
# Installed (editable, offline), not on PYTHONPATH: setup.py maps passes/ to graphconv.passes.
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"

[ -n "${NCU_TILES:-}" ] && IFS=, read -ra NCU_TILES <<<"$NCU_TILES" || NCU_TILES=("128x128 r128" 128x128 64x128)
command -v ncu >/dev/null || PATH=$PATH:$(ls -d /opt/nvidia/nsight-compute/*/ 2>/dev/null | tail -1)

for stage in "${@:-check}"; do
    case $stage in
        check)
            versions 2>&1 | tee "$OUT/versions.txt"
            [ "${PIPESTATUS[0]}" = 0 ] || { echo "python3 cannot run numba-cuda here: see $OUT/versions.txt"; exit 1; }
            timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gemm_cuda.py tests/test_cuda.py \
                2>&1 | tee "$OUT/tests.txt" ;;
        bench) timeout 270 python3 benchmarks/gpu_vs_torch.py --quick --repeats 10 --markdown "$OUT/gpu.md" ;;
        full) timeout 400 python3 benchmarks/gpu_vs_torch.py --repeats 10 --markdown "$OUT/gpu.md" ;;
        tiles) timeout 200 python3 benchmarks/gpu_tiles.py --repeats 10 --json "$OUT/tiles.json" \
                   ${TILES_ONLY:+--only "$TILES_ONLY"} 2>&1 | tee "$OUT/tiles.txt" ;;
        ncu) for tile in "${NCU_TILES[@]}"; do  # where the big tiles' cycles go
                 timeout 90 ncu --clock-control none --launch-skip 1 --launch-count 1 -k regex:kernel \
                     --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
                     --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
                     --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
                     python3 benchmarks/gpu_tiles.py --profile "VGG conv3_2 @1024" "$tile" \
                     > /tmp/ncu.txt 2>&1
                 { echo "=== $tile"; cat /tmp/ncu.txt; } >> "$OUT/ncu.txt"
                 grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issued Ipc|stalled_.*ratio|Warp Cycles Per Issued" \
                     /tmp/ncu.txt | sed "s/^/$tile: /"
             done ;;
        *) echo "unknown stage $stage (check, bench, full, tiles, ncu)"; exit 2 ;;
    esac
done
