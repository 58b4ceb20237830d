"""The hooks of one `capture` block (lninspect.hooks.capture) and what they record.

Per norm and per call: the forward statistics (lninspect.hooks.fused picks eager or
compiled reductions), the spike metrics when asked (lninspect.hooks.spikes), and with
gradients the tensor hooks that reduce each gradient in the backward pass. Records stay on
the device; `Capture` gathers them at the end. A new per-norm reduction is one more store
here (beside `spike_records`), filled in `record`, and gathered in `Capture`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lninspect.hooks.fused import Reductions
from lninspect.hooks.layout import Layout
from lninspect.hooks.normmap import MapSampler
from lninspect.hooks.padding import PassInput
from lninspect.hooks.spikes import spike_metrics
from lninspect.norms.discovery import NormInfo
from lninspect.options import SpikeOptions
from lninspect.statistics import denominator_key

Tensor = torch.Tensor
Record = dict[str, Tensor]  # Statistic.key -> per-token tensor of shape (batch, tokens, ...)
ForwardHook = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any], None]
PreHook = Callable[
    [nn.Module, tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]] | None
]


class Recorder:
    """The hooks of one `capture` block and what they record, per norm and per call."""

    def __init__(
        self,
        norms: Sequence[NormInfo],
        grads: bool,
        spikes: SpikeOptions | None,
        reductions: Reductions,
        skip_recompute: bool = False,
        residual: bool = True,
        weights: bool = True,
    ) -> None:
        self.norms = list(norms)
        self.reductions = reductions
        self.grads = grads
        self.residual = residual  # dL/dx in total, a tensor hook on x itself
        self.weights = weights  # the result summarises each norm's weight
        self.spikes = spikes
        self.active = True  # tensor hooks outlive the block on the graph: they check this
        self.recording = True  # False while paused: the module hooks return at once
        self.skip_recompute = skip_recompute
        self.in_forward = False  # inside the root module's forward (not a checkpoint re-run)
        self.armed: set[str] = set()  # norms whose gradient hooks are armed in this pass
        self.passes = 0  # forward passes of the root module
        self.forward: dict[str, list[Record]] = {n.name: [] for n in self.norms}
        self.backward: dict[str, list[Record]] = {n.name: [] for n in self.norms}
        self.spike_records: dict[str, list[Record]] = {n.name: [] for n in self.norms}
        self.pending_inputs: dict[str, Tensor] = {}
        self.attention_mask: Tensor | None = None  # given to capture(): for every pass
        self.pass_inputs: dict[int, PassInput] = {}  # pass index -> its mask and positions
        self.call_pass: dict[str, list[int]] = {n.name: [] for n in self.norms}
        # the token axis of a norm's per-token arrays, where they also have heads
        self.token_axes: dict[str, int] = {}
        self.maps: dict[str, MapSampler] = {}  # the sample of each norm's map (--map)

    def count_pass(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> None:
        # kwargs None: torch calls a hook removed during this very pass (a watcher restarting
        # its capture) without them, as it no longer knows the hook took them
        if self.recording:
            self.passes += 1
            self.pass_inputs[self.passes - 1] = PassInput.of(
                args, kwargs or {}, self.attention_mask
            )
        self.in_forward, self.armed = True, set()

    def end_pass(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.in_forward = False

    def recompute(self, info: NormInfo) -> bool:
        """Whether this call re-runs a checkpointed block during backward (skip_recompute).

        The re-run happens after the root module's forward has returned. Its forward
        statistics repeat the first call's; it only arms the gradient hooks when the first
        call could not (reentrant checkpointing runs the first forward without grad).
        """
        return self.skip_recompute and not self.in_forward

    def real_tokens(self) -> Tensor | None:
        """The current pass's real-token mask on the device (None without a mask)."""
        current = self.pass_inputs.get(self.passes - 1)
        return None if current is None else current.real_on_device()

    def alias_input(self, info: NormInfo) -> PreHook:
        """Forward pre-hook: give the norm its own alias of x, so dL/dx through it is separable."""

        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            if not self.recording or (self.recompute(info) and info.name in self.armed):
                return None
            found = _first_tensor_slot(args, kwargs)
            if found is None or not found[2].requires_grad:
                return None
            where, key, x = found
            self.pending_inputs[info.name] = x
            alias = x.view_as(x)
            if where == "args":
                args = args[:key] + (alias,) + args[key + 1 :]
            else:
                kwargs = {**kwargs, key: alias}
            return args, kwargs

        return hook

    def record(self, info: NormInfo) -> ForwardHook:
        """Forward hook: reduce x and y to per-token statistics; arm the gradient hooks."""

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any):
            if not self.recording:
                return
            x, y = _first_tensor(args, kwargs), _first_tensor((output,), {})
            if x is None or y is None:
                return
            if self.recompute(info):
                original = self.pending_inputs.pop(info.name, None)
                if self.grads and y.requires_grad and info.name not in self.armed:
                    self._arm_backward(info, x, y, original)
                return
            real = None if self.reductions.token_dims else self.real_tokens()
            stats = self.reductions.stats(x, y, info.eps, info.reduced_dims, real)
            self.forward[info.name].append(stats)
            if x.ndim - info.reduced_dims > 2 and info.name not in self.token_axes:
                self.token_axes[info.name] = Layout.of(x, info.reduced_dims).token_axis
            self.call_pass[info.name].append(self.passes - 1)
            if self.spikes is not None:
                rms, bias = info.kind == "rmsnorm", getattr(module, "bias", None)
                self.spike_records[info.name].append(
                    spike_metrics(
                        x,
                        y,
                        centre=None if rms else stats["mean"],
                        scale=stats[denominator_key(info.kind)],
                        options=self.spikes,
                        bias=bias if isinstance(bias, torch.Tensor) else None,
                        reduced_dims=info.reduced_dims,
                        real=self.real_tokens(),
                    )
                )
            if info.name in self.maps:
                centre = None if info.kind == "rmsnorm" else stats["mean"]
                scale = stats[denominator_key(info.kind)]
                self.maps[info.name].add(x, centre, scale, info.reduced_dims, self.real_tokens())
            original = self.pending_inputs.pop(info.name, None)
            if self.grads and y.requires_grad:
                self._arm_backward(info, x, y, original)

        return hook

    def _arm_backward(self, info: NormInfo, x: Tensor, y: Tensor, original: Tensor | None):
        self.armed.add(info.name)
        call: Record = {}
        self.backward[info.name].append(call)
        dims = info.reduced_dims

        def keep(key: str) -> Callable[[Tensor], None]:
            count = key == "grad_output"  # the non-finite count of dL/dy rides along

            def on_grad(g: Tensor) -> None:
                if self.active and g is not None:
                    call[key], nonfinite = self.reductions.grad(g, dims, count)
                    if nonfinite is not None:
                        call["grad_output_nonfinite"] = nonfinite

            return on_grad

        y.register_hook(keep("grad_output"))
        if original is not None:  # x is then the alias that only this norm uses
            x.register_hook(keep("grad_input"))
            if self.residual:
                original.register_hook(keep("grad_residual"))


def _first_tensor_slot(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, Any, Tensor] | None:
    """Where the first tensor argument sits: ("args", index, t) or ("kwargs", name, t)."""
    for i, value in enumerate(args):
        if isinstance(value, torch.Tensor):
            return "args", i, value
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            return "kwargs", key, value
    return None


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    """The first tensor among positional then keyword arguments (or inside a tuple output)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return value[0]
    return None
