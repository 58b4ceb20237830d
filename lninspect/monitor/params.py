"""Parameter gradient norms of a training step, read as the gradients are accumulated.

A post-accumulate-grad hook on every trainable parameter takes the norm of its `.grad` on
the device (no host sync) each time a backward pass adds to it; the last one of a step is
the norm of the accumulated gradient that the optimizer uses (before clipping). Reading it
there, rather than at `step()`, works whether the loop zeroes gradients before or after.
The hooks exist only while armed (on recording steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lninspect.hooks.params import param_group
from lninspect.hooks.transfer import to_host
from lninspect.norms.discovery import NormInfo, layer_index
from lninspect.results.watch import ParamGroupGrad
from lninspect.trends import group_params


class ParamGradNorms:
    """The (layer, group) of every trainable parameter, and hooks that take its grad norm."""

    def __init__(self, model: nn.Module, norms: Sequence[NormInfo]) -> None:
        names = {n.name for n in norms}
        self.params = [
            (p, layer_index(name), param_group(name, model, names))
            for name, p in model.named_parameters()
            if p.requires_grad
        ]
        self.latest: dict[int, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = []

    def attach(self) -> None:
        """Take the grad norm of each parameter whenever a backward pass accumulates into it."""
        if self.handles:
            return
        self.latest = {}
        for i, (param, _, _) in enumerate(self.params):
            self.handles.append(param.register_post_accumulate_grad_hook(self._hook(i)))

    def _hook(self, i: int) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            if param.grad is not None:
                self.latest[i] = torch.linalg.vector_norm(param.grad, dtype=torch.float32)

        return hook

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def read(self) -> list[ParamGroupGrad]:
        """The norms taken since `attach()`, grouped by (layer, group); one host sync."""
        return self.grouped(self.latest)

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
