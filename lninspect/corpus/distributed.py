"""Several processes under torchrun: who we are, the process group, and small reductions.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them (or with WORLD_SIZE 1) this is
a single process and nothing here touches torch.distributed. The backend is gloo for CPU
(and MPS, whose aggregates live on the CPU) and nccl for CUDA. docs/distributed.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lninspect.errors import EXIT_RUNTIME, LninspectError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The World that torchrun's environment variables describe (one process without them)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise LninspectError(f"bad torchrun environment: {exc}") from exc
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_device(world: World, device: str) -> str:
    """The device of this rank: a bare `cuda` (or `auto` with CUDA) becomes cuda:LOCAL_RANK."""
    if not world.distributed:
        return device
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{world.local_rank}"
    return device


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[World]:
    """Join the process group for the block (when distributed) and leave it at the end."""
    if not world.distributed:
        yield world
        return
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            backend=backend,
            rank=world.rank,
            world_size=world.size,
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, ValueError) as exc:
        raise LninspectError(
            f"cannot join the torchrun process group ({backend}): {exc}", EXIT_RUNTIME
        ) from exc
    try:
        yield world
    finally:
        dist.destroy_process_group()


def sum_ints(values: list[int], device: torch.device) -> list[int]:
    """The sums over all ranks of a few integers (the values themselves in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    return [int(v) for v in tensor.cpu()]
