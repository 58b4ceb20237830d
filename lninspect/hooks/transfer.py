"""Device tensors to the host in a few copies, and the norms' descriptions read that way.

Each `.cpu()` or `.item()` of a CUDA tensor waits for the device and pays a copy's latency.
A run ends with hundreds of small tensors to read (statistics x norms x calls, and five
numbers of each norm's weight): read one by one, that is milliseconds, as long as a whole
forward pass of GPT-2 at batch 1 on an H200. Joined per (device, dtype), it is a few copies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from lninspect.norms.discovery import NormInfo, weight_numbers, weight_summary
from lninspect.results import NormDescription, WeightSummary

Tensor = torch.Tensor


TRANSFER_BYTES = 64 * 2**20  # the most one copy to the host joins: its extra memory on each side


def to_host(tensors: Sequence[Tensor], limit: int = TRANSFER_BYTES) -> list[Tensor]:
    """The tensors on the CPU, in one copy per (device, dtype) rather than one per tensor.

    CPU tensors are returned as they are; the others become views of host buffers of at
    most `limit` bytes each.
    """
    host = list(tensors)
    for batch in transfer_batches(host, limit):
        for i, moved in zip(batch, copy_together([host[i] for i in batch]), strict=True):
            host[i] = moved
    return host


def transfer_batches(tensors: Sequence[Tensor], limit: int) -> list[list[int]]:
    """Indices of the tensors not on the CPU, in runs of one (device, dtype) that hold at most
    `limit` bytes (or one larger tensor), in order within each run."""
    groups: dict[tuple[torch.device, torch.dtype], list[list[int]]] = defaultdict(lambda: [[]])
    size: dict[tuple[torch.device, torch.dtype], int] = defaultdict(int)
    for i, t in enumerate(tensors):
        if t.device.type == "cpu":
            continue
        key, nbytes = (t.device, t.dtype), t.numel() * t.element_size()
        if groups[key][-1] and size[key] + nbytes > limit:
            groups[key].append([])
            size[key] = 0
        groups[key][-1].append(i)
        size[key] += nbytes
    return [batch for runs in groups.values() for batch in runs]


def copy_together(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Tensors of one device and dtype, joined on the device, copied to the CPU at once and
    split there: views of one host buffer, shaped as before."""
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu()
    pieces = flat.split([t.numel() for t in tensors])
    return [piece.view(t.shape) for piece, t in zip(pieces, tensors, strict=True)]


def descriptions(norms: Sequence[NormInfo], weights: bool = True) -> list[NormDescription]:
    """Each norm as plain data (NormInfo.describe), the weights summarised together: one
    stack per kind of weight (device, dtype, shape, offset), one copy to the host for all.
    Without `weights`, no summary (None): nothing read, nothing gathered under FSDP2."""
    groups: dict[tuple[Any, ...], list[tuple[int, Tensor]]] = defaultdict(list)
    for i, norm in enumerate(norms if weights else ()):
        weight = full_weight(norm.gain_tensor())
        if weight is not None:
            kind = (weight.device, weight.dtype, weight.shape, norm.weight_offset)
            groups[kind].append((i, weight.detach()))
    numbers = [  # (norms of the kind, 5) each; the offset is added in float32, as by the norm
        weight_numbers(torch.stack([w for _, w in members]).float() + kind[-1])
        for kind, members in groups.items()
    ]
    summaries: list[WeightSummary | None] = [None] * len(norms)
    for members, rows in zip(groups.values(), to_host(numbers), strict=True):
        for (i, _), row in zip(members, rows.tolist(), strict=True):
            summaries[i] = weight_summary(row)
    return [norm.describe(summary, weights) for norm, summary in zip(norms, summaries, strict=True)]


def full_weight(weight: Any) -> Any:
    """A norm's weight whole: FSDP2 leaves a DTensor shard on the module between passes, so it
    is gathered (a collective: every rank summarises its norms at the same point)."""
    if torch.distributed.is_available():
        from torch.distributed.tensor import DTensor

        if isinstance(weight, DTensor):
            return weight.full_tensor()
    return weight
