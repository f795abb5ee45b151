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
# What reading one byte of a layer's weights from beyond L2 costs a core, in multiply-adds
# of the register tiles, for plans that trade re-reading weights against other work
# (`winograd.job_plan`, `conv.cpu.outer_jobs`). Measured on 2 Xeon cores (AVX-512, 2 MB
# L2): a 512-channel Winograd layer at 14x14 and 28x28 under plans reading its 16.8 MB of
# transformed weights 1 to 10 times, from 3.4 to 4.3 multiply-adds a byte.
WEIGHT_BYTE_COST = 4
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
