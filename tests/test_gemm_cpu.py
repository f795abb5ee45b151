"""The weight-streaming product behind FC-like convs and small-batch fc layers, against
numpy, over the shapes its register tiles make awkward: rows and positions that do not
fill a tile, a single position (the matrix-vector path), group offsets and ReLU."""
import numpy as np
from hypothesis import given, settings, strategies as st

from graphconv.ops.gemm_cpu import POSITIONS_PER_TILE, padded_positions, stream_matmul


def expected(w, bias, xt, relu):
    y = xt.astype(np.float64) @ w.astype(np.float64).T + bias
    return np.maximum(y, 0) if relu else y


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 13), k=st.integers(1, 70), positions=st.integers(1, 10),
       images=st.integers(1, 3), offset=st.integers(0, 3), relu=st.booleans(), seed=st.integers(0, 99))
def test_stream_matmul_matches_numpy(m, k, positions, images, offset, relu, seed):
    rng = np.random.default_rng(seed)
    hw = positions  # each image holds `positions` output pixels
    total = images * hw
    w = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(m + offset).astype(np.float32)
    xt = np.zeros((padded_positions(total), k), np.float32)
    xt[:total] = rng.standard_normal((total, k))
    out3 = np.full((images, m + offset, hw), np.nan, np.float32)
    stream_matmul(w, bias, relu, xt, total, hw, offset, out3)
    want = expected(w, bias[offset:], xt[:total], relu)  # (positions, m)
    got = out3[:, offset:, :].transpose(0, 2, 1).reshape(total, m)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.isnan(out3[:, :offset]).all(), "channels before the offset belong to other groups"


def test_padded_positions_rounds_up_to_whole_tiles():
    assert [padded_positions(p) for p in (1, 3, 4, 36)] == [3, 3, 6, 36]
    assert all(padded_positions(p) % POSITIONS_PER_TILE == 0 for p in range(1, 50))
