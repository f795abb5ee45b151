"""Kernels compiled per register-tile width: each copy sees its width's globals and is
a function of its own name, and a process running convs of one width compiles (or
loads) only that width's kernels, whatever width the tests force elsewhere."""
import ast
import subprocess
import sys

import numpy as np

from graphconv.ops.specialise import LANE_WIDTHS, per_lane_width

TILE = 3  # a global the copies replace


def _scaled(x):
    return x * TILE


def test_each_copy_reads_its_own_globals_under_its_own_name():
    copies = per_lane_width(_scaled, dict(cache=False), TILE={8: 8.0, 16: 16.0})
    assert sorted(copies) == list(LANE_WIDTHS)
    assert [copies[lanes](np.float32(2.0)) for lanes in LANE_WIDTHS] == [16.0, 32.0]
    assert copies[16].py_func.__qualname__ == "_scaled_16" and _scaled(1) == 3  # the original is untouched


RUN_ONE_WIDTH = """
import sys
import numpy as np
from unittest import mock
from graphconv.ops import get_op, vector_tile
from graphconv.ops import gemm_cpu
from graphconv.ops.conv import cpu, winograd
from graphconv.ops.fc import cpu as fc_cpu
from graphconv.params import normalize_params

lanes = int(sys.argv[1])
rng = np.random.default_rng(0)
with mock.patch.object(vector_tile, "OUTER_LANES", lanes), mock.patch.object(vector_tile, "STREAM_LANES", lanes):
    for strategy, kernel in (("outer", 3), ("winograd", 3), ("outer", 1)):
        params = normalize_params(get_op("conv"), dict(out_channels=16, kernel_size=kernel, padding=kernel // 2))
        weights = {"weight": rng.standard_normal((16, 64, kernel, kernel)).astype(np.float32),
                   "bias": np.zeros(16, np.float32)}
        cpu.run_conv(params, weights, [rng.standard_normal((1, 64, 6, 6)).astype(np.float32)],
                     np.empty((1, 16, 6, 6), np.float32), strategy=strategy)
    fc_cpu.run_fc({"out_features": 40, "bias": True}, {"weight": rng.standard_normal((40, 30)).astype(np.float32)},
                  [rng.standard_normal((20, 30, 1, 1)).astype(np.float32)], np.empty((20, 40, 1, 1), np.float32),
                  strategy="stream")
compiled = {name: sorted(w for w, d in table.items() if d.signatures) for name, table in
            (("outer", cpu.OUTER_GROUP), ("thread", cpu._OUTER_THREAD), ("winograd", winograd.WINOGRAD_CONV),
             ("winograd thread", winograd._WINOGRAD_THREAD), ("fc stream", fc_cpu.FC_STREAM),
             ("stream", gemm_cpu.STREAM_MATMUL))}
print(compiled)
"""


def test_a_process_compiles_the_kernels_of_one_width_only():
    """The kernels called from Python are compiled or loaded for the width run; a kernel
    they call appears only where it was compiled (loaded from the cache, it is inside
    its caller's code): never the other width's."""
    for lanes in LANE_WIDTHS:
        result = subprocess.run([sys.executable, "-c", RUN_ONE_WIDTH, str(lanes)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        compiled = ast.literal_eval(result.stdout.strip().splitlines()[-1])
        assert compiled["outer"] == compiled["winograd"] == compiled["fc stream"] == [lanes]
        assert all(compiled[callee] in ([], [lanes]) for callee in ("thread", "winograd thread", "stream"))
