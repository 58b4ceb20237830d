"""Where the sequences, tokens and heads of a norm's activation are (lninspect.hooks.spikes,
the census and capture read it): the canonical (sequences, tokens, heads, d) view."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Layout:
    """Where the sequences, tokens and heads of a norm's per-token shape `lead` are.

    The canonical view of an activation is (sequences S, tokens T, heads G, d): axis 0 of
    `lead` is the sequence axis when lead has two axes or more; the token axis is taken
    from the tensor's memory layout (the axis with the largest stride among those of size
    > 1 after axis 0: projections write tokens outermost, so Gemma 3's (batch, heads,
    tokens) q/k view still has its tokens found); every other axis is a head, flattened
    in the module's order.
    """

    lead: tuple[int, ...]
    token_axis: int  # in lead; 0 for a 1-D lead (tokens, or a flattened batch x tokens)

    @staticmethod
    def of(x: Tensor, reduced_dims: int) -> Layout:
        lead = tuple(x.shape[:-reduced_dims])
        if len(lead) <= 1:
            return Layout(lead, 0)
        strides = x.stride()
        candidates = [a for a in range(1, len(lead)) if lead[a] > 1] or [1]
        return Layout(lead, max(candidates, key=lambda a: (strides[a], -a)))

    @property
    def sequences(self) -> int:
        return self.lead[0] if len(self.lead) > 1 else 1

    @property
    def tokens(self) -> int:
        return self.lead[self.token_axis] if self.lead else 1

    @property
    def heads(self) -> int:
        return max(1, int(torch.Size(self.lead).numel()) // (self.sequences * self.tokens))

    def canonical(self, t: Tensor) -> Tensor:
        """(*lead, ...) -> (S, T, G, ...): a view wherever the memory allows one."""
        rest = t.shape[len(self.lead) :]
        if len(self.lead) <= 1:
            return t.reshape(1, self.tokens, 1, *rest)
        moved = t.movedim(self.token_axis, 1)
        return moved.reshape(self.sequences, self.tokens, self.heads, *rest)

    def module_order(self, t: Tensor) -> Tensor:
        """(S, T, G) per-token values -> the module's own per-token shape `lead`."""
        if len(self.lead) <= 1:
            return t.reshape(self.lead)
        others = [n for a, n in enumerate(self.lead) if a not in (0, self.token_axis)]
        return t.reshape(self.sequences, self.tokens, *others).movedim(1, self.token_axis)

    def as_tensor(self) -> Tensor:
        """The layout as a small CPU tensor, to travel inside a record (no device copy)."""
        return torch.tensor([self.token_axis, *self.lead], dtype=torch.int64)

    @staticmethod
    def from_tensor(t: Tensor) -> Layout:
        values = [int(v) for v in t.tolist()]
        return Layout(tuple(values[1:]), values[0])
