"""Holding processes to a share of a core with a cgroup CPU quota (Linux, as root).

On a machine with few cores, a benchmark that adds gateway processes measures the cores: the
load generator, the databases and the gateways already take all of them. Held to the same
share of a core each, one process and two are compared on equal terms, and what the ratio
shows is whether the processes hold each other back (a shared lock, Redis, the database), not
how many cores are left.

Both cgroup versions: v1's ``cpu`` hierarchy (``cpu.cfs_quota_us``) and v2's ``cpu.max``. Each
process gets a group of its own, removed again on the way out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

PERIOD_US: Final = 20_000  # a short period: the quota's pauses stay short next to a request
CANDIDATES: Final = (
    (Path("/sys/fs/cgroup/cpu"), "v1"),
    (Path("/sys/fs/cgroup/unified"), "v2"),
    (Path("/sys/fs/cgroup"), "v2"),
)


def cpu_controller() -> tuple[Path, str] | None:
    """A writable cgroup hierarchy with the CPU controller, and its version; None if none."""
    for root, version in CANDIDATES:
        if version == "v1":
            usable = (root / "cpu.cfs_quota_us").is_file()
        else:
            controllers = root / "cgroup.subtree_control"
            usable = controllers.is_file() and "cpu" in controllers.read_text().split()
        if usable and os.access(root, os.W_OK):
            return root, version
    return None


@contextlib.contextmanager
def held_to(pids: Sequence[int], cores: float, name: str) -> Iterator[bool]:
    """Each of ``pids`` held to ``cores`` of a core while inside; yields False (and holds
    nothing) where no CPU controller can be written."""
    controller = cpu_controller()
    if controller is None:
        yield False
        return
    root, version = controller
    groups = []
    try:
        for pid in pids:
            group = root / f"{name}-{pid}"
            group.mkdir(exist_ok=True)
            groups.append(group)
            quota = max(1000, round(cores * PERIOD_US))
            if version == "v1":
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            (group / "cgroup.procs").write_text(str(pid))
        yield True
    finally:
        for group in groups:
            _remove(group, root)


def _remove(group: Path, root: Path) -> None:
    """Move what still runs in ``group`` back to the root group, then remove it."""
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (root / "cgroup.procs").write_text(pid)
    with contextlib.suppress(OSError):
        group.rmdir()
