"""Do the massive activations matter? Sun et al. (2024)'s ablation, Table 2.

At the first layer whose residual stream carries massive activations (the input of its
first pre norm, which a pre-LN block shares with the stream), or at a layer chosen
(`SpikeOptions.ablate_layer`), every entry that passes the magnitude rule (in the chosen
dimensions, `ablate_dims`, where given) is replaced in place, in the pass itself, by

- its dimension's mean over the massive entries of *other* texts (collected in a first
  pass over them; Sun et al. fix the activations to "their mean values over many
  sentences"), or
- 0,

and the LM loss is compared with the unchanged run's. The mean over the run's own tokens
would be the value itself wherever one token carries a dimension's massive activation (the
first token, in most models), so that it could only ever give a change of 0.

The spread: each other text is ablated too, with the mean over the remaining ones
(leave one out), which gives a change of the loss per text. Nothing here reads a value
back inside a pass: sums and counts stay on the device until the passes are over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lninspect.hooks.spikes import massive_mask
from lninspect.options import SpikeOptions
from lninspect.results import Ablation, NormStats, StatsResult

Tensor = torch.Tensor


@dataclass
class Sums:
    """Per dimension, on the device: the sum of the massive entries and how many there are."""

    total: Tensor  # (d,) float64 where the device has it, else float32
    count: Tensor  # (d,) int64


def lm_loss(logits: Tensor, ids: Tensor, target_id: int | None) -> Tensor:
    """Mean next-token cross-entropy, or -log p(target) at the last position."""
    if target_id is None:  # logits: (B, T, vocab); position t predicts token t + 1
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    return -F.log_softmax(logits[:, -1], dim=-1)[:, target_id].mean()


def ablate_spikes(
    model: torch.nn.Module,
    result: StatsResult,
    sequences: list[Tensor],
    others: list[Tensor],
    spikes: SpikeOptions,
    target_id: int | None = None,
) -> Ablation:
    """The ablation of the run's `sequences` (each (1, tokens), one pass each), with the mean
    taken over `others` (token ids of other texts, (1, tokens) each)."""
    norm = ablated_norm(result, spikes)
    loss = _mean_loss(model, sequences, target_id)
    if norm is None:
        nan = float("nan")
        return Ablation(
            layer=None, dims=[], loss=loss, loss_mean=nan, loss_zero=nan, **_chosen_fields(spikes)
        )
    module = dict(model.named_modules())[norm.name]
    per_text = [_collect(model, module, ids, spikes, target_id) for ids in others]
    reference = _add([sums for _, sums in per_text]) if per_text else None
    run = _ablated(model, module, sequences, spikes, reference, target_id)
    changes = [
        _change(model, module, ids, spikes, loss_i, _minus(reference, sums), target_id)
        for ids, (loss_i, sums) in zip(others, per_text, strict=True)
        if reference is not None
    ]
    count = run["count"].cpu()
    return Ablation(
        layer=norm.layer,
        dims=[int(j) for j in count.nonzero().flatten()],
        loss=loss,
        loss_mean=run["mean"],
        loss_zero=run["zero"],
        module=norm.name,
        entries=int(count.sum()),
        texts=len(others),
        reference_entries=int(reference.count.sum()) if reference is not None else 0,
        no_mean=[int(j) for j in (count.gt(0) & _undefined(reference, count)).nonzero().flatten()],
        mean_is_value=bool(run["same"]),
        changes_mean=[c[0] for c in changes],
        changes_zero=[c[1] for c in changes],
        **_chosen_fields(spikes),
    )


def _chosen_fields(spikes: SpikeOptions) -> dict[str, Any]:
    dims = list(spikes.ablate_dims) if spikes.ablate_dims is not None else None
    return {"chosen_dims": dims, "chosen_layer": spikes.ablate_layer}


def ablated_norm(result: StatsResult, spikes: SpikeOptions) -> NormStats | None:
    """The first pre norm of the residual stream, in block order, whose input has a massive
    spike (in `spikes.ablate_dims`, where given), at `spikes.ablate_layer` where given,
    else at the first layer that has one."""
    candidates = [
        n
        for n in result.norms
        if n.layer is not None
        and n.reads == "residual"
        and n.placement == "pre"
        and spikes.ablate_layer in (None, n.layer)
        and any(s.massive and _chosen(spikes, s.dim) for s in n.spikes or [])
    ]
    return min(candidates, key=lambda n: n.layer or 0, default=None)


def _chosen(spikes: SpikeOptions, dim: int) -> bool:
    return spikes.ablate_dims is None or dim in spikes.ablate_dims


def _massive(x: Tensor, spikes: SpikeOptions) -> Tensor:
    """Sun et al.'s rule on x (..., d), kept to the chosen dimensions."""
    mask = massive_mask(x.abs().float(), spikes)
    if spikes.ablate_dims is None:
        return mask
    chosen = torch.zeros(mask.shape[-1], dtype=torch.bool, device=mask.device)
    dims = [j for j in spikes.ablate_dims if j < mask.shape[-1]]
    chosen[dims] = True
    return mask & chosen


def _ablated(
    model: torch.nn.Module,
    module: torch.nn.Module,
    sequences: list[Tensor],
    spikes: SpikeOptions,
    reference: Sums | None,
    target_id: int | None,
) -> dict[str, Any]:
    """The losses with the entries set to the reference mean (NaN without a reference) and
    to 0, the entries replaced per dimension, and whether every replacement by the mean
    equalled the value it replaced."""
    found: dict[str, Tensor] = {}
    loss_mean = float("nan")
    if reference is not None:
        with _hooked(module, _replace(spikes, reference.total / reference.count, found)):
            loss_mean = _mean_loss(model, sequences, target_id)
    zero_found: dict[str, Tensor] = {}
    with _hooked(module, _replace(spikes, None, zero_found)):
        loss_zero = _mean_loss(model, sequences, target_id)
    count = zero_found.get("count", torch.zeros(0, dtype=torch.int64))
    same = bool(found["same"]) if "same" in found else False
    return {"mean": loss_mean, "zero": loss_zero, "count": count, "same": same}


def _collect(
    model: torch.nn.Module,
    module: torch.nn.Module,
    ids: Tensor,
    spikes: SpikeOptions,
    target_id: int | None,
) -> tuple[float, Sums]:
    """One other text's unchanged loss and the sums of its massive entries at `module`."""
    found: dict[str, Sums] = {}

    def hook(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        mask = _massive(x, spikes)
        lead = tuple(range(mask.dim() - 1))
        total = torch.where(mask, x.to(_accumulator(x)), 0).sum(dim=lead)
        found["sums"] = Sums(total, mask.sum(dim=lead))

    with _hooked(module, hook):
        loss = _mean_loss(model, [ids], target_id)
    return loss, found["sums"]


def _change(
    model: torch.nn.Module,
    module: torch.nn.Module,
    ids: Tensor,
    spikes: SpikeOptions,
    loss: float,
    reference: Sums,
    target_id: int | None,
) -> tuple[float, float]:
    """(change with the mean of the other texts, change with 0) of one other text."""
    run = _ablated(model, module, [ids], spikes, reference, target_id)
    return run["mean"] - loss, run["zero"] - loss


def _replace(
    spikes: SpikeOptions, mean: Tensor | None, found: dict[str, Tensor]
) -> Callable[[torch.nn.Module, tuple[Any, ...]], None]:
    """A forward pre-hook that replaces, in place, the massive entries of the norm's input
    (batch, tokens, d) by `mean` (d,) (NaN: no mean there, the entry is kept) or by 0.
    `found` adds up, on the device, the entries per dimension and whether each replacement
    equalled the value it replaced."""

    def hook(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        mask = _massive(x.detach(), spikes)  # (batch, tokens, d)
        if mean is None:
            value = torch.zeros_like(x)
        else:
            mask &= ~mean.isnan()  # 0 / 0: no other text has this dimension's activation
            value = mean.to(x.dtype).expand_as(x)
        same = torch.where(mask, value == x, True).all()
        x.copy_(torch.where(mask, value, x))
        count = mask.sum(dim=tuple(range(mask.dim() - 1)))
        found["count"] = found["count"] + count if "count" in found else count
        found["same"] = found["same"] & same if "same" in found else same & mask.any()

    return hook


def _undefined(reference: Sums | None, count: Tensor) -> Tensor:
    """Where the reference has no massive entry (every dimension without a reference)."""
    if reference is None:
        return torch.ones_like(count, dtype=torch.bool)
    return reference.count.cpu() == 0


def _add(sums: list[Sums]) -> Sums:
    total = torch.stack([s.total for s in sums]).sum(0)
    return Sums(total, torch.stack([s.count for s in sums]).sum(0))


def _minus(reference: Sums | None, sums: Sums) -> Sums:
    assert reference is not None
    return Sums(reference.total - sums.total, reference.count - sums.count)


def _accumulator(x: Tensor) -> torch.dtype:
    """float64 sums where the device has float64 (not MPS)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


@contextmanager
def _hooked(module: torch.nn.Module, hook: Callable[..., None]) -> Iterator[None]:
    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _mean_loss(model: torch.nn.Module, sequences: list[Tensor], target_id: int | None) -> float:
    """The LM loss of the sequences, one pass each, averaged over sequences."""
    losses = []
    with torch.inference_mode():
        for ids in sequences:
            logits = model(input_ids=ids, use_cache=False).logits.float()
            losses.append(lm_loss(logits, ids, target_id))
    return float(torch.stack(losses).mean())
