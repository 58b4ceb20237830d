"""Attach hooks to every normalization module and record per-token statistics.

    with capture(model) as cap:
        model(input_ids)
    result = cap.result()

The forward hook of each norm reduces its input and output to per-token numbers on the
device (lninspect.hooks.reduce) and keeps no activation. With `grads=True` it also registers
tensor hooks on the tensors of that call, so the backward pass records per-token gradient
norms: dL/dy at the output, dL/dx through the norm alone (through an alias of x that only
the norm sees) and dL/dx in total (x itself: the residual stream in a pre-LN block).
Every hook is removed on exit, also on error, and the modules' train/eval flags are restored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import nn

from lninspect.hooks.reduce import gather, gather_record, token_nonfinite, token_norm, token_stats
from lninspect.hooks.spikes import collect_spikes, spike_metrics
from lninspect.norms.discovery import NormInfo, find_norms
from lninspect.options import SpikeOptions
from lninspect.results import (
    GradStats,
    InputInfo,
    InputStats,
    ModelInfo,
    NormStats,
    OutputStats,
    StatsResult,
)

Tensor = torch.Tensor
Record = dict[str, Tensor]  # name -> per-token tensor of shape (batch, tokens, ...)


class Capture:
    """What the hooks of one `capture` block recorded, per norm and per call."""

    def __init__(
        self, model: nn.Module, norms: Sequence[NormInfo], grads: bool, spikes: SpikeOptions | None
    ) -> None:
        self.model_class = type(model).__name__
        self.norms = list(norms)
        self.grads = grads
        self.spikes = spikes
        self.active = True  # tensor hooks outlive the block on the graph: they check this
        self.passes = 0  # forward passes of the root module
        self.forward: dict[str, list[Record]] = {n.name: [] for n in self.norms}
        self.backward: dict[str, list[Record]] = {n.name: [] for n in self.norms}
        self.spike_records: dict[str, list[Record]] = {n.name: [] for n in self.norms}
        self._pending_inputs: dict[str, Tensor] = {}

    def result(self, model: ModelInfo | None = None, input: InputInfo | None = None) -> StatsResult:
        """Gather the recorded statistics to the CPU as a StatsResult."""
        norms = [self._norm_stats(info) for info in self.norms if self.forward[info.name]]
        if not norms:
            raise RuntimeError("no normalization module ran inside the capture block")
        if input is None:  # per-token arrays are (sequences, tokens, ...) or just (tokens,)
            shape = norms[0].input.mean.shape
            sequences = shape[0] if len(shape) > 1 else 1
            input = InputInfo(num_sequences=sequences, num_tokens=int(np.prod(shape[:2])))
        return StatsResult(
            model=model or _module_info(self), input=input, norms=norms, passes=self.passes
        )

    def drain(self) -> dict[str, list[Record]]:
        """Hand over and forget the forward records so far: norm name -> per-call records.

        For callers that stream many batches (corpus mode) and aggregate each batch instead
        of keeping every call. With spikes, each call's spike metrics are merged into its
        record (their keys differ). Gradient records are left alone.
        """
        drained: dict[str, list[Record]] = {}
        for name, calls in self.forward.items():
            spikes = self.spike_records[name]
            drained[name] = (
                [{**f, **s} for f, s in zip(calls, spikes, strict=True)] if spikes else calls
            )
            self.forward[name], self.spike_records[name] = [], []
        return drained

    def _norm_stats(self, info: NormInfo) -> NormStats:
        f = gather_record(self.forward[info.name])
        description = info.describe()
        return NormStats(
            **{k.name: getattr(description, k.name) for k in fields(description)},
            input=InputStats(
                mean=f["mean"],
                std=f["std"],
                rms=f["rms"],
                absmax=f["absmax"],
                absmax_dim=f["absmax_dim"],
                nonfinite=f["nonfinite"],
            ),
            output=OutputStats(mean=f["out_mean"], std=f["out_std"]),
            calls=len(self.forward[info.name]),
            grad=self._grad_stats(info, f["mean"].shape) if self.grads else None,
            **self._spike_fields(info),
        )

    def _spike_fields(self, info: NormInfo) -> dict[str, Any]:
        if self.spikes is None:
            return {}
        spikes, order, across = collect_spikes(
            self.spike_records[info.name], self.spikes.max_spikes
        )
        return {"spikes": spikes, "order": order, "across_token_spearman": across}

    def _grad_stats(self, info: NormInfo, shape: tuple[int, ...]) -> GradStats:
        # Backward hooks fire in reverse call order within a pass; one call per pass is the
        # normal case, where the order is that of the passes.
        calls = self.backward[info.name]
        per_key = {k: [c[k] for c in calls if k in c] for k in ("output", "input", "residual")}
        missing = np.full(shape, np.nan, dtype=np.float32)
        arrays = {
            k: gather(v) if len(v) == len(calls) and v else missing for k, v in per_key.items()
        }
        counts = [c["output_nonfinite"] for c in calls if "output_nonfinite" in c]
        return GradStats(
            output_norm=arrays["output"],
            input_norm=arrays["input"],
            residual_norm=arrays["residual"],
            output_nonfinite=gather(counts) if counts and len(counts) == len(calls) else None,
        )

    # Hooks -------------------------------------------------------------------------------

    def count_pass(self, module: nn.Module, args: Any) -> None:
        self.passes += 1

    def alias_input(self, info: NormInfo) -> Any:
        """Forward pre-hook: give the norm its own alias of x, so dL/dx through it is separable."""

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            found = _first_tensor_slot(args, kwargs)
            if found is None or not found[2].requires_grad:
                return None
            where, key, x = found
            self._pending_inputs[info.name] = x
            alias = x.view_as(x)
            if where == "args":
                args = args[:key] + (alias,) + args[key + 1 :]
            else:
                kwargs = {**kwargs, key: alias}
            return args, kwargs

        return hook

    def record(self, info: NormInfo) -> Any:
        """Forward hook: reduce x and y to per-token statistics; arm the gradient hooks."""

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x, y = _first_tensor(args, kwargs), _first_tensor((output,), {})
            if x is None or y is None:
                return
            stats = token_stats(x, y, info.eps, info.reduced_dims)
            self.forward[info.name].append(stats)
            if self.spikes is not None:
                rms, bias = info.kind == "rmsnorm", getattr(module, "bias", None)
                self.spike_records[info.name].append(
                    spike_metrics(
                        x,
                        y,
                        centre=None if rms else stats["mean"],
                        scale=stats["rms" if rms else "std"],
                        options=self.spikes,
                        bias=bias if isinstance(bias, torch.Tensor) else None,
                        reduced_dims=info.reduced_dims,
                    )
                )
            original = self._pending_inputs.pop(info.name, None)
            if self.grads and y.requires_grad:
                self._arm_backward(info, x, y, original)

        return hook

    def _arm_backward(self, info: NormInfo, x: Tensor, y: Tensor, original: Tensor | None) -> None:
        call: Record = {}
        self.backward[info.name].append(call)
        dims = info.reduced_dims

        def keep(key: str) -> Any:
            def on_grad(g: Tensor | None) -> None:
                if self.active and g is not None:
                    call[key] = token_norm(g, dims)
                    if key == "output":
                        call["output_nonfinite"] = token_nonfinite(g, dims)

            return on_grad

        y.register_hook(keep("output"))
        if original is not None:  # x is then the alias that only this norm uses
            x.register_hook(keep("input"))
            original.register_hook(keep("residual"))


@contextmanager
def capture(
    model: nn.Module,
    norms: Sequence[NormInfo] | None = None,
    *,
    grads: bool = False,
    spikes: SpikeOptions | None = None,
    eval_mode: bool = True,
) -> Iterator[Capture]:
    """Hook every norm of `model` (or the given ones) for the duration of the block.

    `grads=True` also records gradient norms in the backward passes run inside the block;
    `spikes` also records spike and order metrics (lninspect.hooks.spikes), at the cost of sorting.
    `eval_mode=True` switches off dropout while capturing; the flags are restored on exit.
    """
    norms = find_norms(model) if norms is None else list(norms)
    cap = Capture(model, norms, grads, spikes)
    training = {m: m.training for m in model.modules()}
    handles = [model.register_forward_pre_hook(cap.count_pass)]
    try:
        if eval_mode:
            model.eval()
        for info in norms:
            if grads:
                handles.append(
                    info.module.register_forward_pre_hook(cap.alias_input(info), with_kwargs=True)
                )
            handles.append(info.module.register_forward_hook(cap.record(info), with_kwargs=True))
        yield cap
    finally:
        cap.active = False
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag


def _first_tensor_slot(args: tuple, kwargs: dict) -> tuple[str, Any, Tensor] | None:
    """Where the first tensor argument sits: ("args", index, t) or ("kwargs", name, t)."""
    for i, value in enumerate(args):
        if isinstance(value, torch.Tensor):
            return "args", i, value
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            return "kwargs", key, value
    return None


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    """The first tensor among positional then keyword arguments (or inside a tuple output)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return value[0]
    return None


def _module_info(cap: Capture) -> ModelInfo:
    """ModelInfo for a plain nn.Module handed to the API, from its first norm's weights."""
    param = next((p for n in cap.norms for p in n.module.parameters()), None)
    return ModelInfo(
        name=cap.model_class,
        source="module",
        cls=cap.model_class,
        dtype=str(param.dtype).removeprefix("torch.") if param is not None else "float32",
        device=str(param.device) if param is not None else "cpu",
        num_layers=len({n.layer for n in cap.norms if n.layer is not None}) or None,
    )
