"""Attach hooks to every normalization module and record per-token statistics.

    with capture(model) as cap:
        model(input_ids)
    result = cap.result()

The forward hook of each norm (lninspect.hooks.recorder) reduces its input and output to
per-token numbers on the device (lninspect.hooks.reduce) and keeps no activation. With
`grads=True` it also registers tensor hooks on the tensors of that call, so the backward
pass records per-token gradient norms: dL/dy at the output, dL/dx through the norm alone
(through an alias of x that only the norm sees) and dL/dx in total (x itself: the residual
stream in a pre-LN block).
Every hook is removed on exit, also on error, and the modules' train/eval flags are restored.

For training runs (lninspect.monitor): `Capture.pause()` / `resume()` stop and restart the
recording of a live block, and `skip_recompute=True` counts each norm once per forward pass
of the model under gradient checkpointing, whose re-run of a block during backward fires
the norms' hooks a second time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import nn

from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.hooks.census import Census, trajectory
from lninspect.hooks.fused import Reductions
from lninspect.hooks.normmap import MapSampler, on_host
from lninspect.hooks.padding import mask_record, no_token_left
from lninspect.hooks.recorder import Record, Recorder
from lninspect.hooks.reduce import gather, gather_record
from lninspect.hooks.spike_results import collect_spikes
from lninspect.hooks.transfer import descriptions, to_host
from lninspect.mapfit import NormMap, norm_map
from lninspect.norms.discovery import NormInfo, find_norms
from lninspect.options import MapOptions, SpikeOptions
from lninspect.results import (
    GradStats,
    InputInfo,
    InputStats,
    ModelInfo,
    NormDescription,
    NormStats,
    OutputStats,
    StatsResult,
)
from lninspect.statistics import on_side

Tensor = torch.Tensor


class Capture:
    """What one `capture` block recorded: `result()` gathers it, `drain()` streams it."""

    def __init__(self, model: nn.Module, hooks: Recorder) -> None:
        self._model_class = type(model).__name__
        self._config = getattr(model, "config", None)
        self._hooks = hooks

    @property
    def passes(self) -> int:
        """Forward passes of the model so far inside the block (not counting paused ones)."""
        return self._hooks.passes

    @property
    def samplers(self) -> dict[str, MapSampler]:
        """Each norm's sampler of its map (--map; empty without)."""
        return self._hooks.maps

    def pause(self) -> None:
        """Record nothing until `resume()`: the hooks stay attached and return at once.

        Gradient hooks armed by a pass recorded before the pause still record its backward.
        """
        self._hooks.recording = False

    def resume(self) -> None:
        """Record again after `pause()`."""
        self._hooks.recording = True

    def result(self, model: ModelInfo | None = None, input: InputInfo | None = None) -> StatsResult:
        """Gather the recorded statistics to the CPU as a StatsResult."""
        hooks = self._hooks
        self._records_to_host()
        reals = self._mask_padding()
        spikes = self._collect_spikes(input)
        ran = [info for info in hooks.norms if hooks.forward[info.name]]
        maps = self.maps()
        norms = [
            self._norm_stats(info, description, spikes.get(info.name), maps.get(info.name))
            for info, description in zip(ran, descriptions(ran, hooks.weights), strict=True)
        ]
        if not norms:
            raise LninspectError(
                "no normalization module ran inside the capture block", EXIT_RUNTIME
            )
        if input is None:
            input = self._input_info(ran[0].name, norms[0].input.mean.shape, reals)
        model = model or self._module_info()
        censuses = {name: census for name, (_, census) in spikes.items()}
        return StatsResult(
            model=model,
            input=input,
            norms=norms,
            passes=hooks.passes,
            trajectory=trajectory(censuses, model.hidden_size, self._residual_names()),
        )

    def maps(self) -> dict[str, NormMap]:
        """Each norm's sampled map with its fits (--map; lninspect.mapfit), in one transfer;
        the samplers keep drawing when the block goes on (a corpus run reads this last)."""
        return {name: norm_map(*found) for name, found in on_host(self._hooks.maps).items()}

    def _residual_names(self) -> set[str]:
        return {n.name for n in self._hooks.norms if n.reads == "residual"}

    def _mask_padding(self) -> dict[int, Tensor | None]:
        """Pad positions of every call set to NaN / -1 (lninspect.hooks.padding); per pass,
        its real tokens on the host (None without a mask)."""
        hooks = self._hooks
        reals = {index: p.real() for index, p in hooks.pass_inputs.items()}
        masks = list(reals.values())
        if masks and all(r is not None and not r.any() for r in masks):
            raise no_token_left(hooks.attention_mask is not None)
        for name, calls in hooks.forward.items():
            passes = hooks.call_pass[name]
            for index, (call, grad) in enumerate(_with_grads(calls, hooks.backward[name])):
                real = reals.get(passes[index]) if index < len(passes) else None
                for record in (call, grad):
                    if real is not None and record is not None:
                        mask_record(record, real)
        return reals

    def _input_info(
        self, name: str, shape: tuple[int, ...], reals: dict[int, Tensor | None]
    ) -> InputInfo:
        """Sequences, real tokens and padding of the passes that the norm `name` recorded:
        one sequence per row of each call; positions when some call starts past 0."""
        hooks = self._hooks
        found = [hooks.pass_inputs.get(p) for p in hooks.call_pass[name]]
        passes = [p for p in found if p is not None and p.tokens is not None]
        if not passes or len(passes) != len(found):  # a plain module's input
            sequences = shape[0] if len(shape) > 1 else 1
            return InputInfo(num_sequences=sequences, num_tokens=int(np.prod(shape[:2])))
        real = [reals.get(p) for p in hooks.call_pass[name]]
        rows = [int(call["mean"].shape[0]) for call in hooks.forward[name]]
        sizes = [n * int(p.tokens or 0) for n, p in zip(rows, passes, strict=True)]
        kept = [size if r is None else int(r.sum()) for size, r in zip(sizes, real, strict=True)]
        padding = sum(sizes) - sum(kept)
        positions = [row for n, p in zip(rows, passes, strict=True) for row in p.token_positions(n)]
        starts_past_zero = any(row and row[0] > 0 for row in positions)
        ids = [p.ids.cpu().tolist() for p in passes if p.ids is not None]  # (batch, tokens) each
        return InputInfo(
            num_sequences=sum(rows),
            num_tokens=sum(kept),
            token_ids=[row for rows_ in ids for row in rows_] if len(ids) == len(passes) else [],
            padding=padding or None,
            positions=positions if starts_past_zero else None,
        )

    def _records_to_host(self) -> None:
        """Replace every record's tensors by CPU copies, made in one transfer per dtype."""
        hooks = self._hooks
        stores = (hooks.forward, hooks.backward, hooks.spike_records)
        slots = [(r, k) for store in stores for calls in store.values() for r in calls for k in r]
        for (record, key), tensor in zip(slots, to_host([r[k] for r, k in slots]), strict=True):
            record[key] = tensor

    def drain(self) -> dict[str, list[Record]]:
        """Hand over and forget the forward records so far: norm name -> per-call records.

        For callers that stream many batches (corpus mode) and aggregate each batch instead
        of keeping every call. With spikes, each call's spike metrics are merged into its
        record (their keys differ). Gradient records are left alone.
        """
        hooks, drained = self._hooks, {}
        for name, calls in hooks.forward.items():
            spikes = hooks.spike_records[name]
            drained[name] = (
                [{**f, **s} for f, s in zip(calls, spikes, strict=True)] if spikes else calls
            )
            hooks.forward[name], hooks.spike_records[name] = [], []
            hooks.call_pass[name] = []
        hooks.pass_inputs.clear()  # a stream of batches keeps none of their masks
        return drained

    def _norm_stats(
        self,
        info: NormInfo,
        description: NormDescription,
        spikes: tuple[dict[str, Any], Census] | None,
        sampled: NormMap | None = None,
    ) -> NormStats:
        hooks = self._hooks
        record = gather_record(hooks.forward[info.name])
        return NormStats(
            **{k.name: getattr(description, k.name) for k in fields(description)},
            input=InputStats.from_record(record),
            output=OutputStats.from_record(record),
            calls=len(hooks.forward[info.name]),
            token_axis=hooks.token_axes.get(info.name),
            grad=self._grad_stats(info, record["mean"].shape) if hooks.grads else None,
            **(spikes[0] if spikes is not None else {}),
            map=sampled,
        )

    def _collect_spikes(self, input: InputInfo | None) -> dict[str, tuple[dict[str, Any], Census]]:
        """Per norm that ran: its spike fields and census (lninspect.hooks.spike_results)."""
        options = self._hooks.spikes
        if options is None:
            return {}
        if input is None:  # the API without a tokenizer: the census lists token ids
            passes = self._pass_ids()
            return {
                name: collect_spikes(records, options, self._norm_ids(name, passes))
                for name, records in self._hooks.spike_records.items()
                if records
            }
        ids = input.token_ids
        pieces: dict[int, str] = {}
        for row_ids, row in zip(ids or [], input.tokens, strict=False):
            pieces.update(zip(row_ids, row, strict=False))
        return {
            name: collect_spikes(records, options, ids, lambda i: pieces.get(i, str(i)))
            for name, records in self._hooks.spike_records.items()
            if records
        }

    def _pass_ids(self) -> dict[int, list[list[int]]]:
        """Each forward pass's input_ids on the host (one copy for all), where it had ids."""
        given = {p: i.ids for p, i in self._hooks.pass_inputs.items() if i.ids is not None}
        host = to_host(list(given.values()))
        return {p: ids.tolist() for p, ids in zip(given, host, strict=True)}

    def _norm_ids(self, name: str, passes: dict[int, list[list[int]]]) -> list[list[int]] | None:
        """The token ids of the norm's calls, one row per sequence, when every pass had ids."""
        calls = self._hooks.call_pass[name]
        if not calls or any(p not in passes for p in calls):
            return None
        return [row for p in calls for row in passes[p]]

    def _grad_stats(self, info: NormInfo, shape: tuple[int, ...]) -> GradStats:
        """Per-token gradient norms; NaN where a call got no gradient, None for counts then.

        Backward hooks fire in reverse call order within a pass; one call per pass is the
        normal case, where the order is that of the passes.
        """
        calls = self._hooks.backward[info.name]
        record: dict[str, np.ndarray] = {}
        for statistic in on_side("grad"):
            values = [c[statistic.key] for c in calls if statistic.key in c]
            if values and len(values) == len(calls):
                record[statistic.key] = gather(values)
            elif not statistic.optional:
                record[statistic.key] = np.full(shape, np.nan, dtype=np.float32)
        return GradStats.from_record(record)

    def _module_info(self) -> ModelInfo:
        """ModelInfo for a model handed to the API: its name and sizes from its config where
        it has one (a transformers model), its dtype and device from its first norm."""
        norms, config = self._hooks.norms, self._config
        param = next((p for n in norms for p in n.module.parameters()), None)
        path = getattr(config, "_name_or_path", None)
        layers = getattr(config, "num_hidden_layers", None)
        width = getattr(config, "hidden_size", None)
        return ModelInfo(
            name=path if isinstance(path, str) and path else self._model_class,
            source="module",
            cls=self._model_class,
            dtype=str(param.dtype).removeprefix("torch.") if param is not None else "float32",
            device=str(param.device) if param is not None else "cpu",
            num_layers=layers
            if isinstance(layers, int)
            else len({n.layer for n in norms if n.layer is not None}) or None,
            hidden_size=width if isinstance(width, int) else None,
        )


@contextmanager
def capture(
    model: nn.Module,
    norms: Sequence[NormInfo] | None = None,
    *,
    grads: bool = False,
    spikes: SpikeOptions | None = None,
    eval_mode: bool = True,
    reductions: str = "auto",
    skip_recompute: bool = False,
    attention_mask: Tensor | None = None,
    nonfinite: bool = True,
    residual: bool = True,
    token_dims: bool = True,
    weights: bool = True,
    maps: MapOptions | None = None,
) -> Iterator[Capture]:
    """Hook every norm of `model` (or the given ones) for the duration of the block.

    `grads=True` also records gradient norms in the backward passes run inside the block;
    `spikes` also records spike and order metrics (lninspect.hooks.spikes).
    `eval_mode=True` switches off dropout while capturing; the flags are restored on exit.
    `reductions`: "eager", "compiled" (one fused pass per norm, lninspect.hooks.fused) or
    "auto" (compiled on CUDA, eager elsewhere).
    `skip_recompute=True` records each norm once per forward pass of `model` under gradient
    checkpointing (calls after the root's forward returned are re-runs: see `recompute`).
    `attention_mask` (batch, tokens), 1 on real tokens: padding to leave out of every
    statistic; without it, the `attention_mask` of each forward call's keyword arguments.
    Under a KV cache (generation) each call is a record of its own, with its positions.
    `nonfinite=False` leaves out the non-finite counts (None in the result);
    `residual=False` the gradient of the residual stream (NaN in the result), for callers
    that do not read it: one pass over a gradient per norm call fewer; `token_dims=False`
    `absmax_dim` only at each call's largest finite |x| (-1 at every other token), for
    callers that read the peak alone: the per-token index is the costliest pass over x;
    `weights=False` no weight summary in the result (under FSDP2 a gather per norm);
    `maps` with `sample` a bounded sample of each norm's map ŷ(x) (lninspect.hooks.normmap).
    """
    norms = find_norms(model) if norms is None else list(norms)
    reducer = Reductions(reductions, nonfinite, token_dims)
    hooks = Recorder(norms, grads, spikes, reducer, skip_recompute, residual, weights)
    hooks.attention_mask = attention_mask
    if maps is not None and maps.sample:
        hooks.maps = {n.name: MapSampler(maps, i) for i, n in enumerate(norms)}
    training = {m: m.training for m in model.modules()}
    handles = [
        model.register_forward_pre_hook(hooks.count_pass, with_kwargs=True),
        model.register_forward_hook(hooks.end_pass, always_call=True),
    ]
    try:
        if eval_mode and any(training.values()):  # most often already in eval mode
            model.eval()
        for info in norms:
            if grads:
                handles.append(
                    info.module.register_forward_pre_hook(hooks.alias_input(info), with_kwargs=True)
                )
            handles.append(info.module.register_forward_hook(hooks.record(info), with_kwargs=True))
        yield Capture(model, hooks)
    finally:
        hooks.active = False
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            if module.training != flag:  # nn.Module.__setattr__ is slow: set only what changed
                module.training = flag


def _with_grads(calls: list[Record], grads: list[Record]) -> list[tuple[Record, Record | None]]:
    """Each forward call with its gradient record when every call has one (one per pass)."""
    paired: list[Record | None] = list(grads) if len(grads) == len(calls) else [None] * len(calls)
    return list(zip(calls, paired, strict=True))
