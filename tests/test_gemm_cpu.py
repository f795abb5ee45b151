"""The weight-streaming product behind FC-like convs and small-batch fc layers, against
numpy, over the shapes its register tiles make awkward: rows that do not fill a tile,
position counts that leave part of a vector or of a 40-position block empty, a single
position (the matrix-vector path), k that ends mid-chunk, group offsets and ReLU."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graphconv.ops import gemm_cpu
from graphconv.ops.gemm_cpu import POSITIONS_PER_TILE, STREAM_MATMUL, padded_positions, stream_width
from graphconv.ops.vector_tile import LANES


def expected(w, bias, cols, positions, relu):
    y = cols[:, :positions].T.astype(np.float64) @ w.astype(np.float64).T + bias
    return np.maximum(y, 0) if relu else y


def run_stream(m, k, hw, images, offset, relu, seed, wide=False, lanes=8):
    rng = np.random.default_rng(seed)
    total = images * hw
    w = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(m + offset).astype(np.float32)
    cols = np.zeros((k, stream_width(total)), np.float32)
    cols[:, :total] = rng.standard_normal((k, total))
    out3 = np.full((images, m + offset, hw), np.nan, np.float32)
    STREAM_MATMUL[lanes](w, bias, relu, cols, total, hw, offset, out3, False, wide)
    want = expected(w, bias[offset:], cols, total, relu)  # (positions, m)
    got = out3[:, offset:, :].transpose(0, 2, 1).reshape(total, m)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    assert np.isnan(out3[:, :offset]).all(), "channels before the offset belong to other groups"


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 150), k=st.integers(1, 300), hw=st.integers(1, 50),
       images=st.integers(1, 3), offset=st.integers(0, 3), relu=st.booleans(), seed=st.integers(0, 99),
       wide=st.booleans(), lanes=st.sampled_from([8, 16]))
def test_stream_matmul_matches_numpy(m, k, hw, images, offset, relu, seed, wide, lanes):
    """Every tile set, whichever the machine runs (a 32-register tile spills on AVX2 but
    stays exact), positions 8 or 16 to a vector."""
    run_stream(m, k, hw, images, offset, relu, seed, wide, lanes)


@pytest.mark.parametrize("wide,lanes", [(False, 8), (True, 8), (True, 16)])
@pytest.mark.parametrize("positions", [1, 2, 8, 9, 16, 24, 32, 36, 40, 41, 48, 56, 64, 81, 96])
def test_every_block_width_and_a_k_past_one_chunk(positions, wide, lanes):
    """Every tile shape (1-5 vectors of 8 per block, blocks after a full 40-wide one; the
    16- and 32-register sets; 1-4 vectors of 16, an 8-lane tile for a last 8 positions,
    blocks after a full 64-wide one) and a k loop of several chunks, on a matrix whose
    rows end mid-group and mid-tile."""
    k = gemm_cpu.CHUNK_FLOATS // stream_width(positions) * 2 + 13
    run_stream(gemm_cpu.GROUP_ROWS + 7, max(k, 2 * LANES + 3), positions, 1, 1, True, positions, wide, lanes)


@pytest.mark.parametrize("m", [1, 3, 4, 5, 7, 8, 67])
@pytest.mark.parametrize("relu", [False, True])
def test_matrix_vector_rows_in_and_out_of_whole_bands(m, relu):
    """One position: MV_ROWS rows at a time, fewer rows than a band, and a last band that
    overlaps the one before it."""
    run_stream(m, 301, 1, 1, 2, relu, m)


def test_stream_width_holds_whole_vectors_or_one_column():
    assert [stream_width(p) for p in (1, 2, 8, 9, 36)] == [1, 8, 8, 16, 40]
    assert [stream_width(p, 16) for p in (1, 2, 16, 17, 36)] == [1, 16, 16, 32, 48]  # no 8-lane leftover


def test_padded_positions_rounds_up_to_whole_tiles():
    assert [padded_positions(p) for p in (1, 3, 4, 36)] == [3, 3, 6, 36]
    assert all(padded_positions(p) % POSITIONS_PER_TILE == 0 for p in range(1, 50))
