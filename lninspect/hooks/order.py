"""Order statistics on the device, of fixed size: the top k with ties broken by the lower
index, the lower median over kept entries, average ranks and Spearman's rho.

The spike metrics (lninspect.hooks.spikes) build on them; none reads a value to the host.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
CHUNK = 8  # entries per chunk in top_lower_first's first round


def masked_median(values: Tensor, keep: Tensor | None, dim: int) -> Tensor:
    """torch.median along `dim` (the lower middle value) of the entries where `keep`: pads
    become NaN for nanmedian, and a NaN among the kept entries gives NaN, as median does."""
    if keep is None:
        return values.median(dim=dim).values
    keep = keep.expand_as(values)
    median = values.where(keep, torch.nan).nanmedian(dim=dim).values
    return median.where(~(values.isnan() & keep).any(dim), torch.nan)


def top_lower_first(values: Tensor, k: int) -> Tensor:
    """The indices of the min(k, n) largest of the n float32 values along the last axis,
    largest first; of equal values, the lower index first (torch.topk leaves the order of
    ties unspecified, and keeps any of them at the cut).

    The order is that of an int64 key: the value's bits, which order float32 values >= 0
    as the values do (NaN above +inf, as topk does), times n, plus n - 1 - index. `values`
    are magnitudes (>= 0) or -1 for an entry to take only after every magnitude. Where n
    holds more than k chunks of CHUNK, the k chunks of largest maximum (the lower chunk
    first among equal) hold the k largest entries: those k x CHUNK candidates are keyed and
    searched instead of all n (a topk over n int64 keys costs 4-5 times more on a CPU).
    """
    n = values.shape[-1]
    bits = values.contiguous().view(torch.int32)
    if n % CHUNK or n // CHUNK <= k:
        return _top_keyed(bits, torch.arange(n, device=values.device), n, k)
    chunks = _top_keyed(bits.unflatten(-1, (-1, CHUNK)).amax(-1), None, n // CHUNK, k)
    within = torch.arange(CHUNK, device=values.device)
    candidates = (chunks.unsqueeze(-1) * CHUNK + within).flatten(-2)  # (..., k * CHUNK)
    return candidates.gather(-1, _top_keyed(bits.gather(-1, candidates), candidates, n, k))


def _top_keyed(bits: Tensor, index: Tensor | None, n: int, k: int) -> Tensor:
    """Positions along the last axis of the min(k, n) largest keys bits * n + n - 1 - index
    (`index`: each entry's index among n; None: its position)."""
    if index is None:
        index = torch.arange(bits.shape[-1], device=bits.device)
    key = torch.add(n - 1 - index, bits.to(torch.int64), alpha=n)
    return key.topk(min(k, bits.shape[-1]), dim=-1).indices


def average_ranks(t: Tensor, dim: int = -1) -> Tensor:
    """Ranks 1..n along `dim`, tied values sharing their average rank (float64).

    One sort; each run of equal sorted values gets the mean of its positions, found from
    where the run starts (a running max) and ends (a running min from the right).
    """
    moved = t.movedim(dim, -1)
    ordered, order = moved.sort(dim=-1)
    n = ordered.shape[-1]
    position = torch.arange(n, device=t.device).expand_as(ordered)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[..., 1:] = ordered[..., 1:] != ordered[..., :-1]  # a run starts here
    last = torch.ones_like(new)
    last[..., :-1] = new[..., 1:]  # a run ends here
    start = torch.where(new, position, 0).cummax(-1).values
    end = torch.where(last, position, n).flip(-1).cummin(-1).values.flip(-1)
    mean = (start + end).double() / 2 + 1
    return torch.empty_like(mean).scatter_(-1, order, mean).movedim(-1, dim)


def spearman(a: Tensor, b: Tensor, dim: int = -1, keep: Tensor | None = None) -> Tensor:
    """Spearman's rho of `a` and `b` along `dim`: Pearson's r of their average ranks.

    NaN where either side is constant (or has one value), as the correlation is undefined.
    With `keep` (broadcast to `a`), over the kept entries only: the others are ranked last
    (+inf), so the kept ones get the ranks they have among themselves, and weigh 0.
    """
    if keep is None:
        ra, rb = average_ranks(a, dim), average_ranks(b, dim)
        ra = ra - ra.mean(dim, keepdim=True)
        rb = rb - rb.mean(dim, keepdim=True)
        return (ra * rb).sum(dim) / ((ra * ra).sum(dim) * (rb * rb).sum(dim)).sqrt()
    w = keep.expand_as(a).double()
    ra = average_ranks(a.where(keep, torch.inf), dim)
    rb = average_ranks(b.where(keep, torch.inf), dim)
    n = w.sum(dim, keepdim=True)
    ra = (ra - (ra * w).sum(dim, keepdim=True) / n) * w
    rb = (rb - (rb * w).sum(dim, keepdim=True) / n) * w
    return (ra * rb).sum(dim) / ((ra * ra).sum(dim) * (rb * rb).sum(dim)).sqrt()
