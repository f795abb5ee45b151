"""What this process's cgroups allow it: the limits a container (docker --memory,
--cpus), a Kubernetes pod or a batch job (SLURM's --mem, --cpus-per-task) sets, which
the machine's own counts do not show. Read the same way for memory (graphconv.memory)
and for CPU time (graphconv.threads): over the process's cgroup and each ancestor, v2
and v1 hierarchies alike, the lowest limit wins.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Callable

CGROUP_MOUNT = Path("/sys/fs/cgroup")

ReadLimit = Callable[[Path], "float | None"]  # a cgroup's folder -> the limit it sets, or None for none


def lowest_limit(v2_limit: ReadLimit, v1_controller: str, v1_limit: ReadLimit,
                 membership: str | os.PathLike = "/proc/self/cgroup",
                 mount: str | os.PathLike = CGROUP_MOUNT) -> float | None:
    """The lowest limit over this process's cgroup and its ancestors: `v2_limit` of each
    cgroup v2 folder, `v1_limit` of each folder of v1's `v1_controller` hierarchy; None
    where none is set or none can be read (not Linux). A cgroup namespace (a container)
    mounts the process's own cgroup as the root, where /proc/self/cgroup may still name
    the path outside: each ancestor of the path, the root included, is looked at."""
    try:
        lines = Path(membership).read_text().splitlines()
    except (OSError, UnicodeError):
        return None
    mount = Path(mount)
    limits = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            limits += _limits_along(mount, path, v2_limit)
        elif v1_controller in controllers.split(","):
            limits += _limits_along(mount / v1_controller, path, v1_limit)
    return min(limits) if limits else None


def _limits_along(mount: Path, path: str, read: ReadLimit) -> list[float]:
    """The limits `read` finds at the cgroup `path` and at each of its ancestors."""
    here = PurePosixPath("/") / path
    limits = []
    for folder in (here, *here.parents):
        try:
            limit = read(mount / str(folder).lstrip("/"))
        except (OSError, UnicodeError, ValueError):
            continue
        if limit is not None:
            limits.append(limit)
    return limits
