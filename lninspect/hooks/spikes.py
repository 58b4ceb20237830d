"""Spike and order metrics of one norm call, on the device, in fixed-size buffers (docs/metrics.md).

For a token with input x and output y over d hidden dimensions, centre c (the mean for
LayerNorm, 0 for RMSNorm) and denominator s (std or rms): z = (x - c) / s. A spike passes
the magnitude rule (|x| > magnitude and > ratio x the median |x| of the module's input in
the sequence: Sun et al. 2024's massive activations) or the z rule (|z| >= z).

A spike's rank is 1 + the number of the token's dimensions with a strictly larger
magnitude: a count, never a sort. It is taken after each stage of the norm in turn,
|x| -> |x - c| (centre) -> |y - b| (weight) -> |y| (bias), so that a change of rank can be
laid at the stage that caused it. Every count that varies (spikes per token, dimensions
that spike) goes into a buffer of fixed size, with the overflow counted.

On an accelerator nothing here reads a value back to the host (the no-sync rule). On the
CPU, where a read costs nothing, the work is sized by the data, with the same record: the
layer median only where some |x| passes `spike_abs`, the top spikes only of the tokens that
have one, the ranks only of the ranked spikes, the across-token order only of columns that
hold a spike (`host_reads`); tests/test_spikes.py compares both paths.
"""

from __future__ import annotations

import torch

from lninspect.hooks.layout import Layout
from lninspect.hooks.order import masked_median, spearman, top_lower_first
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
    count, quiet = spike.sum(-1, dtype=torch.int32), _quiet(spike)  # (S, T, G)
    # |x| of spikes, -1 elsewhere (without a spike, on the CPU, not written)
    score = size["x"].new_full((), -1.0).expand_as(spike) if quiet else size["x"].where(spike, -1.0)
    # The per_token spikes of largest |x| in each token: (S, T, G, M) dims, valid where >= 0.
    dims = _ranked_dims(score, count, options.per_token)
    valid = score.gather(-1, dims) >= 0
    ranks = _stage_ranks(size, dims, valid, centred=c is not None, weighted=(Y, bias))
    stage = _first_stage(ranks, valid)
    ranked_massive = valid & massive.gather(-1, dims)  # (S, T, G, M)
    census = _census_counters(spike, massive, size, keep, quiet)
    spikes, massives = census["census_count"].sum(), census["census_massive"].sum()
    kinds = {  # massive spikes are spikes: the outliers are the difference
        "all": (spikes, valid),
        "massive": (massives, ranked_massive),
        "outlier": (spikes - massives, valid & ~ranked_massive),
    }
    retention, pairs = _topk_retention(X, size, options.top_k), _pairs(size, dims)
    if keep is not None:
        count, retention = count.where(keep, -1), retention.where(keep, torch.nan)
    record: Record = {
        "spike_count": layout.module_order(count),
        "topk_retention": layout.module_order(retention),
        "order_counts": torch.stack(
            [_order_counts(*kinds[kind], stage, pairs) for kind in KINDS]
        ),  # (kinds, ORDER_COUNTS)
        "ranked_dims": torch.where(valid, dims, -1).to(torch.int32),  # (S, T, G, M)
        "ranked_massive": ranked_massive,
        "layout": layout.as_tensor(),
    }
    listed = _listed(X, Y, c, s, massive, dims, valid, ranks, stage, size, options.max_spikes)
    record |= listed | _gains(listed, bias, X.shape[-1])
    record |= _across_tokens(X, Y, score, options.across_dims, keep)
    return record | census


def host_reads(t: Tensor) -> bool:
    """Whether a branch on t's values is free: on the CPU the values are the host's; on an
    accelerator a read waits for the device (and the meta device of tests/test_no_sync.py
    has no values), so there every buffer keeps its fixed size."""
    return t.device.type == "cpu"


def _real_tokens(real: Tensor | None, layout: Layout, device: torch.device) -> Tensor | None:
    """The pass's real-token mask as (S, T, 1) for the canonical view, where it fits."""
    if real is None or tuple(real.shape) != (layout.sequences, layout.tokens):
        return None
    return real.bool().view(layout.sequences, layout.tokens, 1).to(device)


def _magnitudes(X: Tensor, Y: Tensor, c: Tensor | None, bias: Tensor | None) -> dict[str, Tensor]:
    """|x|, |x - c| and |y|, each (S, T, G, d), and a function for |y - b|; shared tensors
    where a stage is absent.

    |y - b| is read from the module's real output, so the effective weight is whatever the
    module applies (Gemma's 1 + w) and no recomputation's rounding is taken for a change;
    only the ranks read it, made when they need it (`weighted`).
    """
    a_x = X.abs()
    a_y = Y.abs()
    centred = a_x if c is None else (X - c.unsqueeze(-1)).abs_()
    return {"x": a_x, "centred": centred, "y": a_y}


def _weighted(Y: Tensor, bias: Tensor) -> Tensor:
    """|y - b| (S, T, G, d)."""
    return (Y - bias.detach().float().reshape(-1, Y.shape[-1])).abs_()  # b: (1 or G, d)


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
    if host_reads(a_x) and a_x.numel() and bool(a_x.amax() <= options.spike_abs):
        return torch.zeros_like(a_x, dtype=torch.bool)  # no median needed (NaN: taken)
    sequences = a_x.shape[0]
    flat_keep = None if keep is None else keep.expand_as(a_x).reshape(sequences, -1)
    median = masked_median(a_x.reshape(sequences, -1), flat_keep, dim=-1)
    median = median.view(sequences, *[1] * (a_x.dim() - 1))
    return (a_x > options.spike_abs) & (a_x > options.spike_ratio * median)


def _ranked_dims(score: Tensor, count: Tensor, per_token: int) -> Tensor:
    """top_lower_first(score, per_token): (S, T, G, M). On the CPU only the tokens with a
    spike (`count` > 0) are searched: every other one's top is 0 .. M - 1 (all equal, -1)."""
    if not host_reads(score):
        return top_lower_first(score, per_token)
    d = score.shape[-1]
    rows = count.flatten().nonzero().squeeze(1)
    dims = torch.arange(min(per_token, d), device=score.device).repeat(count.numel(), 1)
    dims[rows] = top_lower_first(score.reshape(-1, d)[rows], per_token)
    return dims.view(*count.shape, -1)


def _rank(size: Tensor, dims: Tensor, valid: Tensor) -> Tensor:
    """1 + the number of entries of each token larger than each ranked spike: (S, T, G, M),
    0 where `valid` is False (no spike in the slot).

    On the CPU only the valid slots are compared with their token (a (spikes, d) block);
    elsewhere every slot, fixed size: the (S, T, G, M, d) booleans, summed in int16 where d
    allows it (their conversion costs half as much as to int32).
    """
    d = size.shape[-1]
    if not host_reads(size):
        larger = size.unsqueeze(-2) > size.gather(-1, dims).unsqueeze(-1)  # (S, T, G, M, d)
        count = torch.int16 if d < 2**15 else torch.int32
        return torch.where(valid, larger.sum(-1, dtype=count).to(torch.int32) + 1, 0)
    slots = valid.flatten().nonzero().squeeze(1)  # into the flattened (S, T, G, M)
    rows = size.reshape(-1, d)[slots // dims.shape[-1]]  # (spikes, d)
    chosen = rows.gather(-1, dims.reshape(-1, 1)[slots])  # (spikes, 1)
    ranks = torch.zeros(dims.numel(), dtype=torch.int32, device=size.device)
    larger = (rows > chosen).sum(-1, dtype=torch.int32) + 1
    return ranks.index_copy_(0, slots, larger).view(dims.shape)


def _stage_ranks(
    size: dict[str, Tensor],
    dims: Tensor,
    valid: Tensor,
    centred: bool,
    weighted: tuple[Tensor, Tensor | None],
) -> dict[str, Tensor]:
    """The rank after each stage; a stage the module does not have keeps the rank before it.

    `weighted`: Y and the bias, for |y - b|, which the CPU does not make without a spike to
    rank (every rank is then 0, whatever it compares).
    """
    Y, bias = weighted
    if bias is None or (host_reads(valid) and not bool(valid.any())):
        a_weighted = size["y"]  # without a bias |y - b| is |y|; without a spike, unread
    else:
        a_weighted = _weighted(Y, bias)
    rank_in = _rank(size["x"], dims, valid)
    rank_centred = _rank(size["centred"], dims, valid) if centred else rank_in
    rank_weighted = _rank(a_weighted, dims, valid)
    rank_out = _rank(size["y"], dims, valid) if bias is not None else rank_weighted
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


def _pairs(size: dict[str, Tensor], dims: Tensor) -> tuple[Tensor, Tensor]:
    """Of each two slots i, j of a token (S, T, G, M, M): |x_i| > |x_j|; and |y_i| > |y_j| too."""
    vx, vy = size["x"].gather(-1, dims), size["y"].gather(-1, dims)  # (S, T, G, M)
    ordered = vx.unsqueeze(-1) > vx.unsqueeze(-2)
    return ordered, ordered & (vy.unsqueeze(-1) > vy.unsqueeze(-2))


def _order_counts(
    spikes: Tensor, valid: Tensor, stage: Tensor, pairs: tuple[Tensor, Tensor]
) -> Tensor:
    """ORDER_COUNTS of one call as one int64 tensor (8,); `spikes`: how many there are.

    A pair is two ranked spikes of one token with different |x|; it is kept when the larger
    |x| also has the strictly larger |y| (a tie in |y| is not kept): `pairs` (_pairs).
    """
    both = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    ordered, kept = both & pairs[0], both & pairs[1]  # (S, T, G, M, M)
    counts = [
        spikes,
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
    low, high = X.amin(-1), X.amax(-1)  # aminmax(dim=-1) costs 15 times more (CPU)
    return torch.where(low < high, kept, torch.nan)  # NaN also where low or high is NaN


def _across_tokens(
    X: Tensor, Y: Tensor, score: Tensor, limit: int, keep: Tensor | None = None
) -> Record:
    """Across-token order of the `limit` (head, dim) columns with the largest spike |x|.

    Per sequence and column: Spearman over tokens of x vs y and of |x| vs |y| (average
    ranks for ties), and max / median over tokens of |x| and of |y|; over the real tokens
    only where `keep` (S, T, 1) says. NaN in a column without a spike (`across_valid`
    False): the CPU measures only the columns with one.
    """
    d = X.shape[3]
    best = score.amax(dim=(0, 1)).flatten()  # (G * d,): the largest spike |x| per column
    column = top_lower_first(best, limit)
    head, dim = column // d, column % d
    valid = best[column] >= 0  # (A,)
    found = valid.nonzero().squeeze(1) if host_reads(valid) else None  # None: every column
    h, j = (head, dim) if found is None else (head[found], dim[found])
    xs, ys = X[:, :, h, j], Y[:, :, h, j]  # (S, T, A or found)
    measured = {
        "across_rho": spearman(xs, ys, dim=1, keep=keep),  # (S, A or found)
        "across_rho_abs": spearman(xs.abs(), ys.abs(), dim=1, keep=keep),
        "across_compression_in": _compression(xs.abs(), keep),
        "across_compression_out": _compression(ys.abs(), keep),
    }
    if found is None:
        placed = {k: v.where(valid, torch.nan) for k, v in measured.items()}
    else:
        shape = (X.shape[0], len(column))
        placed = {
            k: v.new_full(shape, torch.nan).index_copy_(1, found, v) for k, v in measured.items()
        }
    return {"across_valid": valid, "across_head": head, "across_dim": dim} | placed


def _compression(size: Tensor, keep: Tensor | None) -> Tensor:
    """max over tokens / median over tokens (torch.median: the lower middle value), (S, A)."""
    top = size.amax(dim=1) if keep is None else size.where(keep, 0).amax(dim=1)
    return top / masked_median(size, keep, dim=1)


def _quiet(spike: Tensor) -> bool:
    """Whether no entry is a spike, where reading it is free (the CPU)."""
    return (
        host_reads(spike) and not bool(spike.view(torch.uint8).amax()) if spike.numel() else False
    )


def _census_counters(
    spike: Tensor,
    massive: Tensor,
    size: dict[str, Tensor],
    keep: Tensor | None = None,
    quiet: bool = False,
) -> Record:
    """Per dimension (heads pooled), (d,): spikes, spikes on the first (real) token, the
    same of the massive ones, sequences with a spike, the largest |x| and |y| with the
    (sequence, token) of the largest |x|, and the sums of |x| and |y| over tokens (the
    outlier dimensions' means); the (token, head) rows counted, and where each sequence's
    real tokens start (S,). Pad positions count as |x| = |y| = 0. `quiet`: no token has a
    spike, and the counts of spikes are summed over no token (zeros, not a pass over all)."""
    a_x, a_y = size["x"], size["y"]
    sequences, tokens, heads, d = a_x.shape
    start = torch.zeros(sequences, dtype=torch.int64, device=a_x.device)
    rows = torch.full((), sequences * tokens * heads, dtype=torch.int64, device=a_x.device)
    if keep is not None:
        a_x, a_y = a_x.where(keep.unsqueeze(-1), 0), a_y.where(keep.unsqueeze(-1), 0)
        start = keep[:, :, 0].int().argmax(1)  # the first real token (the first largest)
        rows = keep.sum(dtype=torch.int64) * heads
    first = start.view(sequences, 1, 1, 1).expand(sequences, 1, heads, d)
    counted = slice(0, 0) if quiet else slice(None)  # the tokens whose spikes are summed
    per_sequence = spike[:, counted].sum(dim=(1, 2), dtype=torch.int64)  # (S, d)
    largest, where = _largest(a_x.flatten(0, 2))  # (d,), where into (S, T, G)
    return {
        "census_count": per_sequence.sum(0),
        "census_first": spike.gather(1, first).sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_massive": massive[:, counted].sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_massive_first": massive.gather(1, first).sum(dim=(0, 1, 2), dtype=torch.int64),
        "census_sequences": (per_sequence > 0).sum(0),
        "census_max_in": largest,
        "census_max_out": a_y.amax(dim=(0, 1, 2)),
        "census_max_sequence": where // (tokens * heads),
        "census_max_token": (where // heads) % tokens,
        "census_sum_in": a_x.sum(dim=(0, 1, 2)),
        "census_sum_out": a_y.sum(dim=(0, 1, 2)),
        "census_rows": rows,
        "census_start": start,
    }


def _largest(a_x: Tensor) -> tuple[Tensor, Tensor]:
    """Per column of (rows, d): the largest value (NaN where a NaN is) and the first row of
    the largest, NaN taken as -1 (below every |x|). On the CPU one max(0) gives both where no
    column holds a NaN (the nan_to_num copy and argmax cost six times more)."""
    if host_reads(a_x):
        largest, where = a_x.max(0)
        if not bool(largest.isnan().any()):
            return largest, where
    return a_x.amax(0), a_x.nan_to_num(nan=-1.0).argmax(0)
