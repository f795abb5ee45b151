"""The size of a core's L2 cache, which the kernels' job sizes are budgeted against.

Why read it: a job's buffers should stay in L2, and L2 ranges from 512 KB a core (Zen 3,
where graphconv's budgets were first tuned) to 2 MB (recent Xeons). A budget fixed for
the small one cuts a big layer into jobs 4x smaller than it needs to on the large one,
and each job re-reads the layer's weights (`winograd.job_plan`).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

FALLBACK_L2_BYTES = 512 * 1024  # where the size cannot be read: the smallest common one
_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


@lru_cache(maxsize=1)
def l2_bytes() -> int:
    """Bytes of L2 cache per core as Linux reports it, else FALLBACK_L2_BYTES."""
    try:
        for index in sorted(_CACHES.glob("index*")):
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                return _parse_size((index / "size").read_text().strip())
    except (OSError, ValueError):
        pass
    return FALLBACK_L2_BYTES


def _parse_size(text: str) -> int:
    """'2048K' -> 2097152; '1M', '524288' likewise."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)
