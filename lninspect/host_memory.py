"""The memory this process may still allocate on the host, without torch: /proc/meminfo's
MemAvailable (free pages on other Unix systems), the cgroup's limit less its use, and what
`ulimit -v` leaves; the smallest of those that can be read."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def size(count: float) -> str:
    """Bytes as `1.1 TB`, `27 GB`, `310 MB`, `12 kB` (decimal units, 2-3 significant digits)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} bytes"


def host_available() -> int | None:
    """Bytes the process may still allocate (None when nothing can be read)."""
    found = [
        v
        for v in (_meminfo_available(), _cgroup_available(), _address_space_left())
        if v is not None
    ]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unix systems: free pages (less generous than MemAvailable)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    """What the process may still map under `ulimit -v` (prlimit --as): the limit less its
    present size (None: no limit)."""
    try:
        import resource

        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
        if limit == resource.RLIM_INFINITY:
            return None
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        return max(limit - pages * os.sysconf("SC_PAGE_SIZE"), 0)
    except (ImportError, OSError, ValueError, IndexError):
        return None


def _cgroup_available() -> int | None:
    """The cgroup's limit minus what it uses (page cache that can be dropped not counted)."""
    for limit_file, usage_file, cache_key in (
        (CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current", "inactive_file"),
        (
            CGROUP_V1 / "memory.limit_in_bytes",
            CGROUP_V1 / "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    ):
        try:
            limit_text = limit_file.read_text().strip()
            if limit_text == "max" or int(limit_text) >= NO_LIMIT:
                continue
            used = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        cache = _stat_value(limit_file.parent / "memory.stat", cache_key)
        return max(int(limit_text) - used + cache, 0)
    return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
