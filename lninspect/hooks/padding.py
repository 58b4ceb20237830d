"""Padding and positions of captured calls: what a forward pass's attention mask and cache
positions say about its tokens, applied to the records after they reached the host.

A pad position (mask 0) becomes NaN in every float statistic (-1 in integer ones, as for
the positions that a shorter call lacks), so that every median, range and figure leaves it
out; the result counts it apart (InputInfo.padding). Under a KV cache each call of a norm
sees only the new tokens: the mask then covers past + new tokens and its last columns are
this call's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lninspect.errors import LninspectError

Tensor = torch.Tensor


@dataclass
class PassInput:
    """One forward pass's token facts, kept on the device (no host sync in a hook): the
    attention mask (batch, past + tokens), 1 on real tokens; the positions of its tokens
    (position_ids (batch, tokens), or cache_position (tokens,)); the length of the KV cache
    before it; how many tokens it feeds (from input_ids or inputs_embeds); its input_ids
    (batch, tokens), when it was given ids."""

    mask: Tensor | None
    positions: Tensor | None
    past: int
    tokens: int | None
    ids: Tensor | None = None

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: dict[str, Any], given: Tensor | None):
        mask = given if given is not None else kwargs.get("attention_mask")
        positions = kwargs.get("position_ids", kwargs.get("cache_position"))
        ids = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
        cache = kwargs.get("past_key_values")
        length = getattr(cache, "get_seq_length", None)
        check_mask(mask, ids, given is not None, cached=cache is not None)
        return cls(
            mask if isinstance(mask, Tensor) and mask.ndim == 2 else None,
            positions if isinstance(positions, Tensor) and positions.ndim in (1, 2) else None,
            int(length()) if callable(length) else 0,
            int(ids.shape[1]) if isinstance(ids, Tensor) and ids.ndim >= 2 else None,
            ids
            if isinstance(ids, Tensor) and ids.ndim == 2 and not ids.is_floating_point()
            else None,
        )

    def real(self) -> Tensor | None:
        """(batch, tokens) bool on the host: this pass's real tokens; None without a mask."""
        on_device = self.real_on_device()
        return None if on_device is None else on_device.cpu()

    def real_on_device(self) -> Tensor | None:
        """The same on the mask's device, for a hook (a slice: no host sync)."""
        if self.mask is None or self.tokens is None or self.mask.shape[1] < self.tokens:
            return None
        return self.mask[:, self.mask.shape[1] - self.tokens :].bool()

    def token_positions(self, rows: int) -> list[list[int]]:
        """Each row's positions of this pass's tokens (past .. past + tokens - 1 by default)."""
        tokens = self.tokens or 0
        if self.positions is not None and self.positions.shape[-1] == tokens:
            table = self.positions.cpu().reshape(-1, tokens).expand(rows, tokens)
            return [[int(p) for p in row] for row in table]
        return [list(range(self.past, self.past + tokens))] * rows


def check_mask(mask: Any, ids: Any, given: bool, cached: bool) -> None:
    """Refuse a mask whose shape does not match the pass's input (batch, tokens), or, with a
    KV cache, (batch, past + tokens): shapes only, no host sync. A model's own mask that is
    not (batch, tokens), such as a 4-D one, is not read (not refused) unless given."""
    where = "capture(attention_mask=...)" if given else "the forward call's attention_mask"
    if mask is None or not (given or isinstance(mask, Tensor) and mask.ndim == 2):
        return
    if not isinstance(mask, Tensor):
        raise LninspectError(f"{where} must be a tensor (batch, tokens), not {type(mask).__name__}")
    if not isinstance(ids, Tensor) or ids.ndim < 2:
        return  # a module called without ids: nothing to match
    batch, tokens = ids.shape[0], ids.shape[1]
    columns = mask.shape[-1] >= tokens if cached else mask.shape[-1] == tokens
    if mask.ndim != 2 or mask.shape[0] != batch or not columns:
        want = f"({batch}, past + {tokens})" if cached else f"({batch}, {tokens})"
        raise LninspectError(
            f"{where} has shape {tuple(mask.shape)}, but the forward pass's input is "
            f"{tuple(ids.shape[:2])} (batch, tokens): give a mask of shape {want}"
        )


def no_token_left(given: bool) -> LninspectError:
    """The refusal of a capture whose every token was padding."""
    where = "capture(attention_mask=...)" if given else "the forward calls' attention_mask"
    return LninspectError(
        f"{where} is 0 at every token: no real token is left to take statistics over"
    )


def mask_record(record: dict[str, Tensor], real: Tensor) -> None:
    """Set the pad positions of one call's host record to NaN (-1 for integer statistics).

    The token axis is the first after the batch whose length is the pass's token count
    (axis 1 for hidden states, axis 2 for a q/k norm that sees (batch, heads, tokens)).
    """
    batch, tokens = real.shape
    for key, values in record.items():
        if values.ndim < 2 or values.shape[0] != batch:
            continue
        axis = next((a for a in range(1, values.ndim) if values.shape[a] == tokens), None)
        if axis is None:
            continue
        shape = [batch] + [tokens if a == axis else 1 for a in range(1, values.ndim)]
        pad = ~real.reshape(shape).expand_as(values)
        fill = float("nan") if values.is_floating_point() else -1
        record[key] = values.masked_fill(pad, fill)
