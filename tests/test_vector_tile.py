"""How the outer-product tile's shape is chosen per machine (its products are checked in
tests/test_ops.py, with every shape forced, against the numpy reference)."""
from __future__ import annotations

import pytest

from graphconv.ops import vector_tile

AVX512 = {"avx2": True, "avx512f": True, "avx512vl": True}


@pytest.mark.parametrize("features,expected", [
    ({"avx2": True, "fma": True}, (8, 3)),                        # AVX2: 16 registers, 12 sums of 8 lanes
    (AVX512, (16, 4)),                                            # AVX-512 with VL: 32 registers, 16 sums of 16
    ({"avx2": True, "avx512f": True, "avx512vl": False}, (8, 3)),  # no 256-bit access to the extra 16
    ({}, (8, 3)),                                                 # another architecture
])
def test_the_wide_tile_is_taken_only_where_32_registers_hold_it(features, expected, monkeypatch):
    monkeypatch.delenv("GRAPHCONV_OUTER_LANES", raising=False)
    monkeypatch.delenv("GRAPHCONV_OUTER_VECTORS", raising=False)
    monkeypatch.setattr(vector_tile.llvm, "get_host_cpu_features", lambda: features)
    assert vector_tile._outer_tile_shape() == expected
    assert (vector_tile._vector_registers() == 32) == (expected == (16, 4)), "and the stream's WIDE_TILES with it"


@pytest.mark.parametrize("lanes,vectors,expected", [
    ("8", "", (8, 4)), ("", "3", (16, 3)), ("8", "3", (8, 3)),
    ("32", "5", (16, 4)),  # anything else: the machine's choice
])
def test_the_environment_overrides_the_tile_shape(lanes, vectors, expected, monkeypatch):
    monkeypatch.setattr(vector_tile.llvm, "get_host_cpu_features", lambda: AVX512)
    monkeypatch.setenv("GRAPHCONV_OUTER_LANES", lanes)
    monkeypatch.setenv("GRAPHCONV_OUTER_VECTORS", vectors)
    assert vector_tile._outer_tile_shape() == expected
