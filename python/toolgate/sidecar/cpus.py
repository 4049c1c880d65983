"""How many CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
container limited to 1 CPU gets 1, however many the machine has)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus or 1, max(1, math.ceil(quota)))
    return max(1, cpus or 1)


def cgroup_cpu_quota(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs' worth of time the process's cgroup may use per period, or None without a limit.
    cgroup v2 (``cpu.max``: ``QUOTA PERIOD`` or ``max PERIOD``), else v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1 for none)."""
    for path in _own_cgroup_dirs(root, proc_cgroup):
        try:
            quota, period = (path / "cpu.max").read_text().split()
        except (OSError, ValueError):
            pass
        else:
            return None if quota == "max" else int(quota) / int(period)
        try:
            quota_us = int((path / "cpu.cfs_quota_us").read_text())
            period_us = int((path / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us < 0 else quota_us / period_us
    return None


def _own_cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """The process's cgroup directories, most specific first, then the root (inside a
    container's cgroup namespace the root is the container's own)."""
    dirs = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            dirs.append(root / path.lstrip("/"))
        elif "cpu" in controllers.split(","):
            dirs.append(root / controllers / path.lstrip("/"))
            dirs.append(root / "cpu" / path.lstrip("/"))
    return [*dirs, root, root / "cpu"]
