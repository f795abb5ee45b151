"""How the outer-product tile's width is chosen per machine (its products are checked in
tests/test_ops.py, with both widths forced, against the numpy reference)."""
from __future__ import annotations

import pytest

from graphconv.ops import vector_tile


@pytest.mark.parametrize("features,expected", [
    ({"avx2": True, "fma": True}, 3),                                      # AVX2: 16 registers
    ({"avx2": True, "avx512f": True, "avx512vl": True}, 4),               # AVX-512 with VL: 32
    ({"avx2": True, "avx512f": True, "avx512vl": False}, 3),              # no 256-bit access to the 16 extra
    ({}, 3),                                                               # another architecture
])
def test_the_tile_takes_four_vectors_only_where_32_registers_hold_it(features, expected, monkeypatch):
    monkeypatch.delenv("GRAPHCONV_OUTER_VECTORS", raising=False)
    monkeypatch.setattr(vector_tile.llvm, "get_host_cpu_features", lambda: features)
    assert vector_tile._outer_vectors() == expected


@pytest.mark.parametrize("forced,expected", [("3", 3), ("4", 4), ("5", None), ("", None)])
def test_the_environment_overrides_the_tile_width(forced, expected, monkeypatch):
    monkeypatch.setattr(vector_tile.llvm, "get_host_cpu_features", lambda: {"avx512f": True, "avx512vl": True})
    monkeypatch.setenv("GRAPHCONV_OUTER_VECTORS", forced)
    assert vector_tile._outer_vectors() == (expected or 4)  # anything else: the machine's choice


def test_every_tile_width_the_kernels_can_be_given_has_its_rows():
    assert vector_tile.OUTER_VECTORS in (3, 4)
    assert all(vector_tile.OUTER_ROWS[v] * v <= 16 for v in range(1, 5))  # at most 16 sums in registers
