"""Parameter gradient norms of a training step, read at the end of each backward pass.

While armed, a gradient hook on the model's output (set by the watcher's gate at each
training pass) queues a callback on the autograd engine when the backward pass reaches it.
That callback queues a second one, which therefore runs after every callback queued during
the backward pass: after DDP's (the averaged gradients copied into `.grad`) and FSDP2's
(the reduce-scattered gradient shards set as `.grad`). It takes the norms of all `.grad`s
in one `torch._foreach_norm` (on the device, no host sync); the last backward of a step is
the accumulated gradient the optimizer uses (before clipping). Reading them there, rather
than at `step()`, works whether the loop zeroes gradients before or after.

The norms are what `.grad` holds after the backward pass: one process's own gradients;
under DDP the gradients averaged over ranks (`"averaged"`); under FSDP2, whose `.grad` is a
DTensor shard, each rank's sum of squares of its shard, summed over the mesh dimensions
that shard it (`"full"`): the norm of the whole gradient, never a shard's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd import Variable

from lninspect.hooks.params import param_group
from lninspect.hooks.transfer import to_host
from lninspect.norms.discovery import NormInfo
from lninspect.norms.placing import layer_index
from lninspect.results.watch import ParamGroupGrad
from lninspect.trends import group_params

Tensor = torch.Tensor
Shards = tuple[Any, tuple[int, ...]]  # (device mesh, the mesh dims that shard a gradient)


class ParamGradNorms:
    """The (layer, group) of every trainable parameter, and the grad norms of each backward."""

    def __init__(self, model: nn.Module, norms: Sequence[NormInfo]) -> None:
        names = {n.name for n in norms}
        self.params = [
            (p, layer_index(name), param_group(name, model, names))
            for name, p in model.named_parameters()
            if p.requires_grad
        ]
        self.sharded = any(is_dtensor(p) for p, _, _ in self.params)
        self.averaged = False  # set by the watcher when DDP averages the gradients
        self.armed = False
        self.latest: dict[int, torch.Tensor] = {}  # index -> norm (or shard's sum of squares)
        self.shards: dict[int, Shards] = {}
        self._queued = False

    def attach(self) -> None:
        """Take the grad norms at the end of every backward pass from now on."""
        self.armed, self.latest, self.shards = True, {}, {}

    def detach(self) -> None:
        self.armed = False

    def watch_output(self, output: Any) -> None:
        """Hook the first tensor of a training pass's output that requires grad."""
        tensor = first_grad_tensor(output)
        if self.armed and tensor is not None:
            tensor.register_hook(self._backward_reached)

    def _backward_reached(self, grad: torch.Tensor) -> None:
        if self.armed and not self._queued:
            self._queued = True
            Variable._execution_engine.queue_callback(self._queue_last)

    def _queue_last(self) -> None:
        Variable._execution_engine.queue_callback(self._take)  # after the wrappers' callbacks

    def _take(self) -> None:
        self._queued = False
        if not self.armed:
            return
        present = [(i, p.grad) for i, (p, _, _) in enumerate(self.params) if p.grad is not None]
        local = [cast(Any, g).to_local() if is_dtensor(g) else g for _, g in present]
        norms = torch._foreach_norm([g.detach() for g in local], 2, dtype=torch.float32)
        self.latest, self.shards = {}, {}
        for (i, grad), norm in zip(present, norms, strict=True):
            shards = shard_dims(grad)
            self.latest[i] = norm * norm if shards else norm
            if shards:
                self.shards[i] = shards

    @property
    def kind(self) -> str:
        """What the norms are of: `local`, `averaged` (DDP) or `full` (FSDP2, from shards)."""
        if self.sharded:
            return "full"
        return "averaged" if self.averaged else "local"

    def read(self) -> list[ParamGroupGrad]:
        """The norms of the last backward since `attach()`, grouped by (layer, group).

        Under FSDP2 this reduces over the mesh: every rank must call it."""
        return self.grouped(full_norms(self.latest, self.shards))

    def grouped(self, norms: dict[int, torch.Tensor]) -> list[ParamGroupGrad]:
        """Group per-parameter norms (index -> 0-d tensor); a parameter without one is NaN."""
        values = [math.nan] * len(self.params)
        order = sorted(norms)
        for i, value in zip(order, to_host([norms[i] for i in order]), strict=True):
            values[i] = float(value)  # one copy per device to the host, not one per norm
        return group_params(
            [(layer, group, v) for (_, layer, group), v in zip(self.params, values, strict=True)]
        )

    def of_grads(self, grads: Sequence[torch.Tensor | None]) -> list[ParamGroupGrad]:
        """Group the norms of gradients given in parameter order (torch.autograd.grad's)."""
        norms = {
            i: torch.linalg.vector_norm(g, dtype=torch.float32)
            for i, g in enumerate(grads)
            if g is not None
        }
        return self.grouped(norms)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [p for p, _, _ in self.params]


def full_norms(norms: dict[int, torch.Tensor], shards: dict[int, Shards]) -> dict[int, Tensor]:
    """Norms of sharded gradients from each rank's sum of squares: one all-reduce per mesh dim
    and group of gradients sharded alike; the other norms as they are."""
    out = {i: v for i, v in norms.items() if i not in shards}
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    for i, (mesh, dims) in shards.items():
        groups[id(mesh), dims].append(i)
    for members in groups.values():
        mesh, dims = shards[members[0]]
        squares = torch.stack([norms[i] for i in members])
        for dim in dims:
            dist.all_reduce(squares, group=mesh.get_group(dim))
        out.update(zip(members, squares.sqrt(), strict=True))
    return out


def is_dtensor(tensor: Any) -> bool:
    if not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def shard_dims(tensor: Tensor) -> Shards | None:
    """A DTensor's mesh and the mesh dims whose placement shards it (None: not sharded)."""
    if not is_dtensor(tensor):
        return None
    dtensor = cast(Any, tensor)
    dims = tuple(i for i, p in enumerate(dtensor.placements) if p.is_shard())
    return (dtensor.device_mesh, dims) if dims else None


def first_grad_tensor(output: Any) -> Tensor | None:
    """The first tensor requiring grad in a model output (tensor, tuple, dict, ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output if output.requires_grad else None
    values = output.values() if isinstance(output, dict) else output
    if isinstance(values, (tuple, list)) or isinstance(output, dict):
        for value in values:
            found = first_grad_tensor(value)
            if found is not None:
                return found
    return None
