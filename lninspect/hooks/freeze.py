"""What a norm's nonlinearity is worth: the LM loss with its per-token divisor s frozen at
constants (Heimersheim 2024; Baroni et al. 2025; docs/metrics.md, "The norm's map").

A norm's output is affine in (x - c) / s: y = γ (x - c) / s + β. Frozen, it is
γ (x - c) / k + β with k a constant per position class, which a forward hook gets from the
module's own output as β + (y - β) s / k, s recomputed from x as the norm does (std or rms
with its eps): exact for any norm class, whatever its gain (1 + w for Gemma).

The constants come from calibration texts: `median`, the median s of their tokens that are
not the first of a text; `classes`, the median s of their first tokens for position 0 and
`median` for the rest. Configurations ride in the batch dimension: the text repeated once
per configuration, each row with its own norms frozen, so one forward pass measures many.
The spread follows the spike ablation's protocol (lninspect.hooks.ablation): each held-out
text is frozen with the constants of the other texts (leave one out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lninspect.hooks.spikes import Layout
from lninspect.norms.discovery import NormInfo
from lninspect.results.freeze import (
    VARIANTS,
    AllFreeze,
    Freeze,
    FreezeChange,
    GroupFreeze,
    NormFreeze,
)
from lninspect.roles import group_order
from lninspect.streams import Group

Tensor = torch.Tensor
ROWS = 16  # configurations per forward pass


@dataclass(frozen=True)
class Frozen:
    """One configuration: these norms frozen, with one constant (`median`) or two."""

    norms: tuple[str, ...]
    variant: str  # "median" or "classes"


Constants = dict[str, tuple[float, float]]  # norm -> (first token's s, the rest's median s)


def token_scale(x: Tensor, info: NormInfo) -> Tensor:
    """s per token (and head) as the norm computes it, in float32: the lead shape of x."""
    flat = x.detach().float().flatten(-info.reduced_dims)
    if info.kind == "rmsnorm":
        return (flat.square().mean(-1) + info.eps).sqrt()
    return (flat.var(-1, unbiased=False) + info.eps).sqrt()


def calibration_scales(
    model: torch.nn.Module, norms: Sequence[NormInfo], texts: list[Tensor]
) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per text (ids (1, tokens)) and norm: s of its first token and s of the rest (every
    head), float64 on the host, read once after the passes."""
    found: list[dict[str, tuple[Tensor, int]]] = []
    hooks = {n.name: n for n in norms}

    def record(name: str) -> Callable[..., None]:
        def hook(_: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x, info = args[0], hooks[name]
            found[-1][name] = token_scale(x, info), _token_axis(x, info)

        return hook

    with _hooked(norms, record), torch.inference_mode():
        for ids in texts:
            found.append({})
            model(input_ids=ids, use_cache=False)
    return [{name: _split(*found_s) for name, found_s in text.items()} for text in found]


def _split(s: Tensor, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(first token's s, the rest's s) of one text's s, tokens on `axis`."""
    values = s.double().cpu().movedim(axis, 0).reshape(s.shape[axis], -1).numpy()
    return values[0].ravel(), values[1:].ravel()


def _token_axis(x: Tensor, info: NormInfo) -> int:
    """The token axis of x's lead shape, from its memory layout (lninspect.hooks.spikes)."""
    return Layout.of(x.detach().flatten(-info.reduced_dims), reduced_dims=1).token_axis


def constants_of(scales: list[dict[str, tuple[np.ndarray, np.ndarray]]]) -> Constants:
    """Per norm over the texts given: (median s of first tokens, median s of the rest)."""
    names = scales[0].keys() if scales else []
    return {
        name: (
            float(np.median(np.concatenate([t[name][0] for t in scales]))),
            float(np.median(np.concatenate([t[name][1] for t in scales]))),
        )
        for name in names
    }


def frozen_losses(
    model: torch.nn.Module,
    norms: Sequence[NormInfo],
    ids: Tensor,
    configs: list[Frozen],
    constants: Constants,
    rows: int = ROWS,
) -> list[float]:
    """The mean next-token loss of `ids` (1, tokens) under each configuration, `rows`
    configurations per forward pass; read back once at the end."""
    losses = []
    hooks = {n.name: n for n in norms}
    state: dict[str, tuple[Tensor, Tensor]] = {}  # norm -> (rows frozen (B,), k (B, T))

    def freeze(name: str) -> Callable[..., Any]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            if name not in state:
                return None
            frozen, k = state[name]
            return _frozen_output(module, args[0], output, hooks[name], frozen, k)

        return hook

    tokens = ids.shape[1]
    with _hooked(norms, freeze), torch.inference_mode():
        for start in range(0, len(configs), rows):
            chunk = configs[start : start + rows]
            state.clear()
            state.update(_chunk_state(chunk, constants, tokens, ids.device))
            batch = ids.expand(len(chunk), tokens)
            logits = model(input_ids=batch, use_cache=False).logits.float()
            losses.append(_row_losses(logits, batch))
    return [float(v) for v in torch.cat(losses).cpu()] if losses else []


def _chunk_state(
    chunk: list[Frozen], constants: Constants, tokens: int, device: torch.device
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per norm frozen somewhere in the chunk: which rows, and each row's k per token."""
    names = {name for config in chunk for name in config.norms}
    state = {}
    for name in names:
        first, rest = constants[name]
        k = np.full((len(chunk), tokens), rest)
        rows = np.array([name in c.norms for c in chunk])
        classes = np.array([c.variant == "classes" for c in chunk])
        k[classes, 0] = first
        state[name] = (
            torch.tensor(rows, device=device),
            torch.tensor(k, dtype=torch.float32, device=device),
        )
    return state


def _frozen_output(
    module: torch.nn.Module, x: Tensor, y: Tensor, info: NormInfo, frozen: Tensor, k: Tensor
) -> Tensor:
    """β + (y - β) s / k on the frozen rows, y elsewhere; k (B, T) placed on x's tokens."""
    s = token_scale(x, info)  # x's lead shape: (B, T) or with heads
    bias = getattr(module, "bias", None)
    beta = bias.float() if isinstance(bias, torch.Tensor) else 0.0
    lead = s.shape
    axis = _token_axis(x, info)
    shape = [lead[0]] + [lead[a] if a == axis else 1 for a in range(1, len(lead))]
    k_lead = k.view(shape)
    row = frozen.view([lead[0]] + [1] * (len(lead) - 1))
    ratio = torch.where(row, s / k_lead, 1.0)
    ratio = ratio.view(*lead, *([1] * info.reduced_dims))
    return ((y.float() - beta) * ratio + beta).to(y.dtype)


def _row_losses(logits: Tensor, ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each row: (B,)."""
    each = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return each.mean(-1)


@contextmanager
def _hooked(norms: Sequence[NormInfo], make: Callable[[str], Callable[..., Any]]) -> Iterator[None]:
    handles = [n.module.register_forward_hook(make(n.name)) for n in norms]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def configurations(norms: Sequence[NormInfo]) -> tuple[list[Frozen], list[Group]]:
    """Every configuration measured, both variants each: each norm alone, each group of
    norms (role and placement) at once, every norm at once; and the groups in block order."""
    groups = sorted({Group(n.reads, n.role, n.placement) for n in norms}, key=_group_order)
    sets: list[tuple[str, ...]] = [(n.name,) for n in norms]
    sets += [tuple(n.name for n in norms if _group(n) == g) for g in groups]
    sets += [tuple(n.name for n in norms)]
    return [Frozen(names, v) for names in sets for v in VARIANTS], groups


def _group(norm: NormInfo) -> Group:
    return Group(norm.reads, norm.role, norm.placement)


def _group_order(group: Group) -> tuple[int, int, str]:
    return (*group_order(group.role, group.placement), group.reads)


def measure_freezing(
    model: torch.nn.Module,
    norms: Sequence[NormInfo],
    sequences: list[Tensor],
    calibration: list[Tensor],
    on_text: Callable[[int, int], None] | None = None,
) -> tuple[Freeze, dict[str, NormFreeze]]:
    """The loss changes of every configuration on the run's `sequences` (each (1, tokens),
    constants from every calibration text) and on each calibration text (constants from
    the others); `on_text(done, total)` after each text (progress on long runs)."""
    configs, groups = configurations(norms)
    baseline = Frozen((), VARIANTS[0])
    scales = calibration_scales(model, norms, calibration)
    everything = constants_of(scales)
    texts = [(ids, everything) for ids in sequences]
    texts += [
        (ids, constants_of(scales[:i] + scales[i + 1 :])) for i, ids in enumerate(calibration)
    ]
    losses = []
    for done, (ids, constants) in enumerate(texts, 1):
        losses.append(frozen_losses(model, norms, ids, [baseline, *configs], constants))
        if on_text is not None:
            on_text(done, len(texts))
    run = np.mean(np.asarray(losses[: len(sequences)]), axis=0)  # windows: the mean loss
    held_out = np.asarray(losses[len(sequences) :]).reshape(len(calibration), -1)
    if len(calibration) < 2:  # leave one out needs two texts: no spread
        held_out = np.zeros((0, len(configs) + 1))
    change = {
        c: FreezeChange(
            float(run[i + 1] - run[0]), [float(v) for v in held_out[:, i + 1] - held_out[:, 0]]
        )
        for i, c in enumerate(configs)
    }
    return _assemble(norms, groups, change, everything, run, held_out, calibration)


def _assemble(
    norms: Sequence[NormInfo],
    groups: list[Group],
    change: dict[Frozen, FreezeChange],
    constants: Constants,
    run: np.ndarray,
    held_out: np.ndarray,
    calibration: list[Tensor],
) -> tuple[Freeze, dict[str, NormFreeze]]:
    def both(names: tuple[str, ...]) -> dict[str, FreezeChange]:
        return {v: change[Frozen(names, v)] for v in VARIANTS}

    per_norm = {
        n.name: NormFreeze(
            **both((n.name,)), constant=constants[n.name][1], first=constants[n.name][0]
        )
        for n in norms
    }
    members = [tuple(n.name for n in norms if _group(n) == g) for g in groups]
    freeze = Freeze(
        loss=float(run[0]),
        texts=len(held_out),
        tokens=max((int(ids.shape[1]) for ids in calibration), default=0),
        groups=[
            GroupFreeze(g.role, g.placement, g.reads, len(names), **both(names))
            for g, names in zip(groups, members, strict=True)
        ],
        all=AllFreeze(**both(tuple(n.name for n in norms))),
        moved=[name for name, f in per_norm.items() if f.median.moves],
        losses=[float(v) for v in held_out[:, 0]],
    )
    return freeze, per_norm
