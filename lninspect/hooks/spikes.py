"""Spike and order metrics of one norm call, on the device, in fixed-size buffers (docs/metrics.md).

For a token with input x and output y over d hidden dimensions, centre c (the mean for
LayerNorm, 0 for RMSNorm) and denominator s (std or rms): z = (x - c) / s. A spike passes
the magnitude rule (|x| > magnitude and > ratio x the median |x| of the module's input in
the sequence: Sun et al. 2024's massive activations) or the z rule (|z| >= z).

A spike's rank is 1 + the number of the token's dimensions with a strictly larger
magnitude: a count, never a sort. It is taken after each stage of the norm in turn,
|x| -> |x - c| (centre) -> |y - b| (weight) -> |y| (bias), so that a change of rank can be
laid at the stage that caused it. Nothing here reads a value back to the host: every count
that varies (spikes per token, dimensions that spike) goes into a buffer of fixed size,
with the overflow counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lninspect.hooks.reduce import hidden_flat
from lninspect.options import SpikeOptions

Tensor = torch.Tensor
Record = dict[str, Tensor]
# order_counts: what each entry counts, summed over the calls of a module
ORDER_COUNTS = (
    "spikes",
    "ranked",
    "rank_kept",
    "pairs",
    "pairs_kept",
    "centre",
    "weight",
    "bias",
)
STAGE_CODES = {1: "centre", 2: "weight", 3: "bias"}  # spike_stage: 0 = rank kept
# order_counts rows: every spike, the massive ones, the z-rule outliers that are not massive
KINDS = ("all", "massive", "outlier")


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


@torch.no_grad()
def spike_metrics(
    x: Tensor,
    y: Tensor,
    *,
    centre: Tensor | None,
    scale: Tensor,
    bias: Tensor | None,
    options: SpikeOptions,
    reduced_dims: int = 1,
    real: Tensor | None = None,
) -> Record:
    """The spike record of one call: ranks, order counts, the listed spikes, across-token
    order and the census counters, all of fixed size.

    `centre` (the per-token mean; None for RMSNorm) and `scale` (std or rms) are the token's
    statistics as lninspect.hooks.reduce.token_stats computed them, in the module's order.
    `real` (sequences, tokens) bool on the device, False on padding: pad positions are
    left out of every spike statistic (no spike there, -1 / NaN per token, outside the
    medians, the Spearman ranks and the census); ignored unless it fits the call's shape.
    """
    flat_x = hidden_flat(x, reduced_dims)
    layout = Layout.of(flat_x, reduced_dims=1)
    X = layout.canonical(flat_x.float())  # (S, T, G, d)
    Y = layout.canonical(hidden_flat(y, reduced_dims).float())
    s = layout.canonical(scale.float())  # (S, T, G)
    c = None if centre is None else layout.canonical(centre.float())
    keep = _real_tokens(real, layout, X.device)  # (S, T, 1) or None
    size = _magnitudes(X, Y, c, bias)
    spike, massive = _spike_mask(size["x"], size["centred"], s, options, keep)
    score = torch.where(spike, size["x"], -1.0)  # |x| of spikes, -1 elsewhere
    # The per_token spikes of largest |x| in each token: (S, T, G, M) dims, valid where >= 0.
    dims = top_lower_first(score, options.per_token)
    valid = score.gather(-1, dims) >= 0
    ranks = _stage_ranks(size, dims, centred=c is not None, biased=bias is not None)
    stage = _first_stage(ranks, valid)
    ranked_massive = valid & massive.gather(-1, dims)  # (S, T, G, M)
    kinds = {
        "all": (spike, valid),
        "massive": (massive, ranked_massive),
        "outlier": (spike & ~massive, valid & ~ranked_massive),
    }
    count, retention = spike.sum(-1, dtype=torch.int32), _topk_retention(X, size, options.top_k)
    if keep is not None:
        count, retention = count.where(keep, -1), retention.where(keep, torch.nan)
    record: Record = {
        "spike_count": layout.module_order(count),
        "topk_retention": layout.module_order(retention),
        "order_counts": torch.stack(
            [_order_counts(*kinds[kind], stage, size, dims) for kind in KINDS]
        ),  # (kinds, ORDER_COUNTS)
        "ranked_dims": torch.where(valid, dims, -1).to(torch.int32),  # (S, T, G, M)
        "ranked_massive": ranked_massive,
        "layout": layout.as_tensor(),
    }
    listed = _listed(X, Y, c, s, massive, dims, valid, ranks, stage, size, options.max_spikes)
    record |= listed | _gains(listed, bias, X.shape[-1])
    record |= _across_tokens(X, Y, score, options.across_dims, keep)
    record |= _census_counters(spike, massive, size, keep)
    return record


def _real_tokens(real: Tensor | None, layout: Layout, device: torch.device) -> Tensor | None:
    """The pass's real-token mask as (S, T, 1) for the canonical view, where it fits."""
    if real is None or tuple(real.shape) != (layout.sequences, layout.tokens):
        return None
    return real.bool().view(layout.sequences, layout.tokens, 1).to(device)


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

    One topk on an int64 key: the value's bits, which order float32 values >= 0 as the
    values do (NaN above +inf, as topk does), times n, plus n - 1 - index. `values` are
    magnitudes (>= 0) or -1 for an entry to take only after every magnitude.
    """
    n = values.shape[-1]
    reverse = torch.arange(n - 1, -1, -1, device=values.device)
    key = values.contiguous().view(torch.int32).to(torch.int64) * n + reverse
    return key.topk(min(k, n), dim=-1).indices


def _magnitudes(X: Tensor, Y: Tensor, c: Tensor | None, bias: Tensor | None) -> dict[str, Tensor]:
    """|x|, |x - c|, |y - b| and |y|, each (S, T, G, d); shared tensors where a stage is absent.

    |y - b| is read from the module's real output, so the effective weight is whatever the
    module applies (Gemma's 1 + w) and no recomputation's rounding is taken for a change.
    """
    a_x = X.abs()
    a_y = Y.abs()
    centred = a_x if c is None else (X - c.unsqueeze(-1)).abs_()
    weighted = a_y
    if bias is not None:
        b = bias.detach().float().reshape(-1, X.shape[-1])  # (1 or G, d)
        weighted = (Y - b).abs_()
    return {"x": a_x, "centred": centred, "weighted": weighted, "y": a_y}


def _spike_mask(
    a_x: Tensor, centred: Tensor, s: Tensor, options: SpikeOptions, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(spike, massive) masks (S, T, G, d).

    The magnitude rule compares with the median |x| over every token, head and dimension of
    the sequence (torch.median: the lower middle value), as Sun et al.'s code does, not
    with the token's own median. The z rule is |x - c| >= z * s, without a division.
    Pad positions (`keep` False, (S, T, 1)) are no spike and outside the median.
    """
    keep4 = None if keep is None else keep.unsqueeze(-1)  # (S, T, 1, 1)
    massive = massive_mask(a_x, options, keep4)
    spike = massive | (centred >= options.spike_z * s.unsqueeze(-1))
    if keep4 is None:
        return spike, massive
    return spike & keep4, massive & keep4


def massive_mask(a_x: Tensor, options: SpikeOptions, keep: Tensor | None = None) -> Tensor:
    """Sun et al.'s rule on |x| of shape (sequences, ...): above `magnitude` and above `ratio`
    x the median over everything of its sequence (its real tokens, where `keep` says)."""
    sequences = a_x.shape[0]
    flat_keep = None if keep is None else keep.expand_as(a_x).reshape(sequences, -1)
    median = masked_median(a_x.reshape(sequences, -1), flat_keep, dim=-1)
    median = median.view(sequences, *[1] * (a_x.dim() - 1))
    return (a_x > options.spike_abs) & (a_x > options.spike_ratio * median)


def _rank(size: Tensor, dims: Tensor) -> Tensor:
    """1 + the number of entries of each token larger than each chosen one: (S, T, G, M).

    Summed in int16 where d allows it: the (S, T, G, M, d) booleans are the largest tensor
    of the metrics, and their conversion costs half as much as to int32 (CPU).
    """
    chosen = size.gather(-1, dims)
    larger = size.unsqueeze(-2) > chosen.unsqueeze(-1)  # (S, T, G, M, d)
    count = torch.int16 if size.shape[-1] < 2**15 else torch.int32
    return larger.sum(-1, dtype=count).to(torch.int32) + 1


def _stage_ranks(
    size: dict[str, Tensor], dims: Tensor, centred: bool, biased: bool
) -> dict[str, Tensor]:
    """The rank after each stage; a stage the module does not have keeps the rank before it."""
    rank_in = _rank(size["x"], dims)
    rank_centred = _rank(size["centred"], dims) if centred else rank_in
    rank_weighted = _rank(size["weighted"], dims)
    rank_out = _rank(size["y"], dims) if biased else rank_weighted
    return {"in": rank_in, "centred": rank_centred, "weighted": rank_weighted, "out": rank_out}


def _first_stage(ranks: dict[str, Tensor], valid: Tensor) -> Tensor:
    """0 where rank_out == rank_in (or no spike), else the first stage that changed it:
    1 centre, 2 weight, 3 bias (int8, (S, T, G, M))."""
    stage = torch.where(
        ranks["centred"] != ranks["in"],
        1,
        torch.where(ranks["weighted"] != ranks["centred"], 2, 3),
    )
    changed = valid & (ranks["out"] != ranks["in"])
    return torch.where(changed, stage, 0).to(torch.int8)


def _order_counts(
    spike: Tensor, valid: Tensor, stage: Tensor, size: dict[str, Tensor], dims: Tensor
) -> Tensor:
    """ORDER_COUNTS of one call as one int64 tensor (8,).

    A pair is two ranked spikes of one token with different |x|; it is kept when the larger
    |x| also has the strictly larger |y| (a tie in |y| is not kept).
    """
    vx, vy = size["x"].gather(-1, dims), size["y"].gather(-1, dims)  # (S, T, G, M)
    both = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    ordered = both & (vx.unsqueeze(-1) > vx.unsqueeze(-2))  # (S, T, G, M, M)
    kept = ordered & (vy.unsqueeze(-1) > vy.unsqueeze(-2))
    counts = [
        spike.sum(),
        valid.sum(),
        (valid & (stage == 0)).sum(),
        ordered.sum(),
        kept.sum(),
        *[(valid & (stage == code)).sum() for code in STAGE_CODES],
    ]
    return torch.stack(counts).to(torch.int64)


def _listed(
    X: Tensor,
    Y: Tensor,
    c: Tensor | None,
    s: Tensor,
    massive: Tensor,
    dims: Tensor,
    valid: Tensor,
    ranks: dict[str, Tensor],
    stage: Tensor,
    size: dict[str, Tensor],
    limit: int,
) -> Record:
    """The `limit` ranked spikes of largest |x| in the call, as flat tensors (limit,)."""
    _, tokens, heads, per_token = dims.shape
    score = torch.where(valid, size["x"].gather(-1, dims), -1.0).flatten()
    slot = top_lower_first(score, limit)  # into the flattened (S, T, G, M)
    row = slot // per_token
    seq, tok, head = row // (tokens * heads), (row // heads) % tokens, row % heads
    dim = dims.flatten()[slot]
    value = X[seq, tok, head, dim]
    centre = c[seq, tok, head] if c is not None else torch.zeros_like(value)
    return {
        "spike_valid": score[slot] >= 0,
        "spike_sequence": seq,
        "spike_token": tok,
        "spike_head": head,
        "spike_dim": dim,
        "spike_value": value,
        "spike_out": Y[seq, tok, head, dim],
        "spike_z": (value - centre) / s[seq, tok, head],
        "spike_massive": massive[seq, tok, head, dim],
        **{f"spike_rank_{k}": v.flatten()[slot] for k, v in ranks.items()},
        "spike_stage": stage.flatten()[slot],
    }


def _gains(listed: Record, bias: Tensor | None, d: int) -> Record:
    """The effective weight (y - b) / z and the bias at each listed spike's dimension."""
    if bias is None:
        b = torch.zeros_like(listed["spike_out"])
    else:
        table = bias.detach().float().reshape(-1, d)  # (1 or G, d)
        head = listed["spike_head"].clamp(max=table.shape[0] - 1)
        b = table[head, listed["spike_dim"]]
    gains = {"spike_gain": (listed["spike_out"] - b) / listed["spike_z"]}
    return gains | ({"spike_bias": b} if bias is not None else {})


def _topk_retention(X: Tensor, size: dict[str, Tensor], k: int) -> Tensor:
    """Per token (S, T, G): the share of its k largest |x| among its k largest |y|.

    Over all dimensions, a secondary column; NaN for a token with fewer than two distinct
    values (or a non-finite one), whose order means nothing.
    """
    top_x, top_y = top_lower_first(size["x"], k), top_lower_first(size["y"], k)
    kept = (top_x.unsqueeze(-1) == top_y.unsqueeze(-2)).any(-1).float().mean(-1)
    low, high = torch.aminmax(X, dim=-1)
    return torch.where(low < high, kept, torch.nan)  # NaN also where low or high is NaN


def _across_tokens(
    X: Tensor, Y: Tensor, score: Tensor, limit: int, keep: Tensor | None = None
) -> Record:
    """Across-token order of the `limit` (head, dim) columns with the largest spike |x|.

    Per sequence and column: Spearman over tokens of x vs y and of |x| vs |y| (average
    ranks for ties), and max / median over tokens of |x| and of |y|; over the real tokens
    only where `keep` (S, T, 1) says.
    """
    d = X.shape[3]
    best = score.amax(dim=(0, 1)).flatten()  # (G * d,): the largest spike |x| per column
    column = top_lower_first(best, limit)
    head, dim = column // d, column % d
    xs, ys = X[:, :, head, dim], Y[:, :, head, dim]  # (S, T, A)
    return {
        "across_valid": best[column] >= 0,
        "across_head": head,
        "across_dim": dim,
        "across_rho": spearman(xs, ys, dim=1, keep=keep),  # (S, A)
        "across_rho_abs": spearman(xs.abs(), ys.abs(), dim=1, keep=keep),
        "across_compression_in": _compression(xs.abs(), keep),
        "across_compression_out": _compression(ys.abs(), keep),
    }


def _compression(size: Tensor, keep: Tensor | None) -> Tensor:
    """max over tokens / median over tokens (torch.median: the lower middle value), (S, A)."""
    top = size.amax(dim=1) if keep is None else size.where(keep, 0).amax(dim=1)
    return top / masked_median(size, keep, dim=1)


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


def _census_counters(
    spike: Tensor, massive: Tensor, size: dict[str, Tensor], keep: Tensor | None = None
) -> Record:
    """Per dimension (heads pooled), (d,): spikes, spikes on the first (real) token, the
    same of the massive ones, sequences with a spike, the largest |x| and |y| with the
    (sequence, token) of the largest |x|, and the sums of |x| and |y| over tokens (the
    outlier dimensions' means); the (token, head) rows counted, and where each sequence's
    real tokens start (S,). Pad positions count as |x| = |y| = 0."""
    a_x, a_y = size["x"], size["y"]
    sequences, tokens, heads, d = a_x.shape
    start = torch.zeros(sequences, dtype=torch.int64, device=a_x.device)
    rows = torch.full((), sequences * tokens * heads, dtype=torch.int64, device=a_x.device)
    if keep is not None:
        a_x, a_y = a_x.where(keep.unsqueeze(-1), 0), a_y.where(keep.unsqueeze(-1), 0)
        start = keep[:, :, 0].int().argmax(1)  # the first real token (the first largest)
        rows = keep.sum(dtype=torch.int64) * heads
    first = start.view(sequences, 1, 1, 1).expand(sequences, 1, heads, d)
    where = a_x.nan_to_num(nan=-1.0).flatten(0, 2).argmax(0)  # (d,) into (S, T, G)
    return {
        "census_count": spike.sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_first": spike.gather(1, first).sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_massive": massive.sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_massive_first": massive.gather(1, first).sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_sequences": spike.any(dim=2).any(dim=1).sum(0, dtype=torch.int64),
        "census_max_in": a_x.amax(dim=(0, 1, 2)),
        "census_max_out": a_y.amax(dim=(0, 1, 2)),
        "census_max_sequence": where // (tokens * heads),
        "census_max_token": (where // heads) % tokens,
        "census_sum_in": a_x.sum(dim=(0, 1, 2)),
        "census_sum_out": a_y.sum(dim=(0, 1, 2)),
        "census_rows": rows,
        "census_start": start,
    }
