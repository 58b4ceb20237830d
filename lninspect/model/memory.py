"""How much memory a run needs, estimated before anything is allocated, and how much there is.

A model of the wrong size is refused with the numbers instead of being killed by the kernel
after minutes of swapping (a GPT-2 folder whose config.json says llama builds a 4096-wide,
32-layer model: 26 GB with the bundled model's config). The parameters are estimated from
the config's numbers first (model/checks.py), then, for a model that fits by that estimate,
counted exactly on the meta device (shapes, no storage); activations are estimated from the
config (the formulas below). Free memory comes from /proc/meminfo's MemAvailable, the cgroup's limit
and the address-space limit (`ulimit -v`) for the CPU, from torch.cuda.mem_get_info for a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lninspect.errors import LninspectError
from lninspect.model.checks import dimension

GiB = 1 << 30
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


@dataclass(frozen=True)
class Need:
    """Bytes a run needs, split as the message shows them."""

    parameters: int
    activations: int = 0
    gradients: int = 0  # parameter gradients of a backward pass

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.gradients


def size(count: float) -> str:
    """Bytes as `1.1 TB`, `27 GB`, `310 MB`, `12 kB` (decimal units, 2-3 significant digits)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} bytes"


def parameter_bytes(build: Any, dtype: torch.dtype) -> int:
    """Bytes of the parameters and buffers of the module `build()` makes, built on the meta
    device (no storage is allocated), at `dtype` for floating-point tensors."""
    with torch.device("meta"):
        module: nn.Module = build()
    tensors = [*module.parameters(), *module.buffers()]
    item = torch.empty((), dtype=dtype).element_size()
    return sum(t.numel() * (item if t.is_floating_point() else t.element_size()) for t in tensors)


def activation_bytes(config: Any, tokens: int, batch: int, grads: bool, item: int) -> int:
    """Estimated activation bytes of one pass of `batch` sequences of `tokens` on a
    decoder-only transformer described by `config` (a transformers config).

    Forward only, the peak is one layer's temporaries, T (4h + i) + a T^2 elements (the
    attention scores), plus the logits in float32. With a backward pass every layer keeps
    its activations, about T (10h + 2i) + 2 a T^2 elements (Korthikanti et al. 2022's count),
    and the logits are held three times (logits, log-softmax, their gradient).
    h: hidden size, i: MLP width, a: heads, T: tokens.
    """
    h = dimension(config, "width") or 0
    i = dimension(config, "mlp") or 4 * h
    a = dimension(config, "heads") or 1
    layers = dimension(config, "layers") or 1
    vocab = dimension(config, "vocab") or 0
    t = tokens
    if grads:
        per_layer = t * (10 * h + 2 * i) + 2 * a * t * t
        return batch * (layers * per_layer * item + 3 * t * vocab * 4)
    return batch * ((t * (4 * h + i) + a * t * t) * item + 2 * t * vocab * 4)


def available_bytes(device: torch.device) -> tuple[int, str] | None:
    """(free bytes, where they were read) for `device`, or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"is free on {device}"
    if device.type in ("cpu", "mps"):  # mps shares the machine's memory
        found = [
            v
            for v in (_meminfo_available(), _cgroup_available(), _address_space_left())
            if v is not None
        ]
        if found:
            return min(found), "of memory is available"
    return None


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


def check_fits(need: Need, device: torch.device, what: str, hint: str) -> None:
    """Refuse (exit 2, before anything is allocated) a run that needs more than is free."""
    found = available_bytes(device)
    if found is None or need.total <= found[0]:
        return
    free, where = found
    parts = [
        f"{size(count)} {label}"
        for count, label in (
            (need.parameters, "of parameters"),
            (need.gradients, "of parameter gradients"),
            (need.activations, "of activations"),
        )
        if count
    ]
    needs = f"~{parts[0]}" if len(parts) == 1 else f"~{size(need.total)} ({', '.join(parts)})"
    raise LninspectError(f"{what} needs {needs}, but only {size(free)} {where}: {hint}")
