"""The L2 size the kernels budget their jobs against: read from Linux where it can be,
a safe small size where it cannot."""
from pathlib import Path

import pytest

from graphconv.ops import cache_size


@pytest.mark.parametrize("text,expected", [("2048K", 2 << 20), ("1M", 1 << 20), ("524288", 512 << 10),
                                           ("48k", 48 << 10)])
def test_sizes_as_linux_writes_them(text, expected):
    assert cache_size._parse_size(text) == expected


def _cache_entry(folder: Path, name: str, level: str, kind: str, size: str) -> None:
    entry = folder / name
    entry.mkdir()
    for field, value in (("level", level), ("type", kind), ("size", size)):
        (entry / field).write_text(value + "\n")


def test_the_unified_level_2_cache_is_the_one_read(tmp_path, monkeypatch):
    _cache_entry(tmp_path, "index0", "1", "Data", "48K")
    _cache_entry(tmp_path, "index1", "1", "Instruction", "32K")
    _cache_entry(tmp_path, "index2", "2", "Unified", "2048K")
    _cache_entry(tmp_path, "index3", "3", "Unified", "491520K")
    monkeypatch.setattr(cache_size, "_CACHES", tmp_path)
    cache_size.l2_bytes.cache_clear()
    try:
        assert cache_size.l2_bytes() == 2 << 20
    finally:
        cache_size.l2_bytes.cache_clear()


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_an_unreadable_cache_description_falls_back(tmp_path, monkeypatch, damage):
    if damage == "garbled":
        _cache_entry(tmp_path, "index2", "2", "Unified", "lots")
    monkeypatch.setattr(cache_size, "_CACHES", tmp_path / "nowhere" if damage == "missing" else tmp_path)
    cache_size.l2_bytes.cache_clear()
    try:
        assert cache_size.l2_bytes() == cache_size.FALLBACK_L2_BYTES
    finally:
        cache_size.l2_bytes.cache_clear()
