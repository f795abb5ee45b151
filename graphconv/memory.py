"""A memory budget, checked before anything big is allocated.

A small file must not take the machine: a 600-byte spec can ask for a conv with a
billion output channels, a 10 KB `.npy` header can claim a 40 GB array, a 450 KB PNG
can decode to 8 GB. Every place that is about to allocate from a size the user
controls asks `check_fits(nbytes, what)` first, and gets a one-line GraphconvError
with the estimate when it is over the limit, instead of a MemoryError minutes later
(or the kernel's OOM killer).

The limit defaults to DEFAULT_SHARE of the machine's physical memory; the CLI's
`--memory-limit` (e.g. `--memory-limit 8G`) and `set_memory_limit()` change it.
"""
from __future__ import annotations

import os
import re

from graphconv.errors import GraphconvError

DEFAULT_SHARE = 0.8
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_limit: int | None = None


def physical_memory() -> int:
    """Bytes of RAM on this machine (a generous 16 GiB where the OS will not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def memory_limit() -> int:
    """The current budget in bytes."""
    return _limit if _limit is not None else int(DEFAULT_SHARE * physical_memory())


def set_memory_limit(limit: int | str | None) -> None:
    """Set the budget (bytes, or text such as '512M' / '8G'); None restores the default."""
    global _limit
    _limit = parse_size(limit) if isinstance(limit, str) else limit


def parse_size(text: str) -> int:
    """'8G' -> 8 GiB, '512M', '1.5G', '1000000' (bytes); a GraphconvError otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise GraphconvError(f"--memory-limit: expected a size such as 512M or 8G, got {text[:40]!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: float, what: str, *, file: str | None = None) -> None:
    """Refuse, before allocating, anything that would need more than the budget."""
    limit = memory_limit()
    if nbytes > limit:
        raise GraphconvError(f"{what} needs about {format_size(nbytes)}, over the memory limit of "
                             f"{format_size(limit)} (raise it with --memory-limit)", file=file)
