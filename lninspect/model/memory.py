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

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lninspect.errors import LninspectError
from lninspect.host_memory import host_available, size
from lninspect.model.checks import dimension

GiB = 1 << 30


@dataclass(frozen=True)
class Need:
    """Bytes a run needs, split as the message shows them."""

    parameters: int
    activations: int = 0
    gradients: int = 0  # parameter gradients of a backward pass

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.gradients


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
        host = host_available()
        if host is not None:
            return host, "of memory is available"
    return None


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
