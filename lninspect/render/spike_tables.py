"""Rich tables of spike results, each fitting an 80-column terminal: the largest spikes, the
order kept per module, the census of spiking dimensions and the ablation (no torch)."""

from __future__ import annotations

import math

import numpy as np
from rich.console import Group, RenderableType

from lninspect.derived import KINDS, layer_span, nan_median, order_totals, peak_not_spike, spread
from lninspect.dimensions import census_rows
from lninspect.options import SpikeOptions
from lninspect.render.fit import Cell, Column, FitTable
from lninspect.render.format import (
    Phrases,
    fmt,
    place_label,
    short_names,
    token_label,
    token_text,
)
from lninspect.results import Ablation, NormStats, Spike, StatsResult
from lninspect.results.aggregate import AggregateResult

NO_SPIKE = "no spike in any module"


def spike_rule(result: StatsResult | AggregateResult) -> str:
    """The two rules in words, with the thresholds of the run."""
    default = SpikeOptions()
    magnitude = result.spike_abs if result.spike_abs is not None else default.spike_abs
    ratio = result.spike_ratio if result.spike_ratio is not None else default.spike_ratio
    z = result.spike_z if result.spike_z is not None else default.spike_z
    return f"|x| > {magnitude:g} and > {ratio:g} × the layer's median |x| (massive), or |z| ≥ {z:g}"


def peak_note(result: StatsResult) -> str | None:
    """Why the largest spike's norm shows a larger max |x| elsewhere (derived.peak_not_spike)."""
    found = peak_not_spike(result)
    if found is None:
        return None
    peak, norm = found.peak, found.norm
    assert peak.at is not None
    z = result.spike_z if result.spike_z is not None else SpikeOptions().spike_z
    name = short_names([n.name for n in result.norms])[result.norms.index(norm)]
    where = f"{place_label(result, peak.at)} dim {peak.dim}"
    return (
        f"{name}'s largest |x|, {fmt(peak.value)} at {where}, is no spike: "
        f"|z| ≤ {found.z_bound:.3g} < {z:g} at its token, and not massive"
    )


def spike_tables(result: StatsResult, wide: bool = False) -> list[RenderableType]:
    """Every spike table of a result, in reading order (`wide`: every optional column)."""
    tables: list[RenderableType] = [spikes_table(result, wide=wide), order_table(result, wide)]
    tables += [census_table(result, kind=kind, wide=wide) for kind in KINDS]
    if result.ablation is not None:
        tables.append(ablation_table(result))
    return tables


def magnitude(value: float) -> str:
    """|x|-sized numbers with 4 significant digits, never in exponent form below 1e6."""
    if not math.isfinite(value) or abs(value) >= 1e6:
        return fmt(value)
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def columns_of(
    headers: list[str], rows: list[list[Cell]], left: set[str], drops: dict[str, int]
) -> list[Column]:
    """The columns of `rows` under `headers`: `left` justified on the left, `drops` optional;
    a column of tuples (items) wraps between them."""
    columns = []
    for i, header in enumerate(headers):
        cells = [row[i] for row in rows]
        wrap = any(isinstance(cell, tuple) for cell in cells)
        columns.append(Column(header, cells, header in left, drops.get(header), wrap))
    return columns


def top_spikes(result: StatsResult, limit: int = 20) -> list[tuple[str, Spike]]:
    """The `limit` spikes of largest |x| over all modules, with their (short) module names."""
    names = dict(zip((n.name for n in result.norms), _short(result), strict=True))
    pairs = [(names[n.name], s) for n in result.norms for s in n.spikes or []]
    return sorted(pairs, key=lambda pair: -abs(pair[1].value))[:limit]


def _short(result: StatsResult | AggregateResult) -> list[str]:
    return short_names([n.name for n in result.norms])


def not_massive(result: StatsResult, value: float) -> str | None:
    """Why |x| past the magnitude rule's threshold is not massive: the ratio rule, whose
    median |x| of the layer has grown past |x| / ratio. None when that is not the case."""
    if result.spike_abs is None or result.spike_ratio is None or abs(value) <= result.spike_abs:
        return None
    floor = abs(value) / result.spike_ratio
    return (
        f"|x| = {magnitude(abs(value))} is not massive: it is at most {result.spike_ratio:g} × "
        f"the layer's median |x|, which has grown to {floor:.3g} or more"
    )


def spikes_table(result: StatsResult, limit: int = 20, wide: bool = False) -> FitTable:
    """The largest spikes by |x|: where, how large, their rank before and after the norm
    (where 80 columns are few, without gain, then by, y and z)."""
    spikes = top_spikes(result, limit)
    unmarked = [s for _, s in spikes if not s.massive and not_massive(result, s.value)]
    notes = [peak_note(result)] + [not_massive(result, unmarked[0].value) if unmarked else None]
    caption = (
        "rank: 1 + the dims of the token with a larger |x| (before) or |y| (after); "
        "by: the first stage that moved it (centre, weight, bias); gain: the weight at "
        "the dim, (y - b) / z; m: massive" + "".join(f"; {n}" for n in notes if n)
    )
    rows: list[list[Cell]] = [
        [
            name,
            token_label(result, spike.sequence, spike.token, width=TOKEN_WIDTH),
            f"{spike.dim}" if spike.head is None else f"h{spike.head}:{spike.dim}",
            magnitude(spike.value) + (" m" if spike.massive else ""),
            fmt(spike.out_value),
            fmt(spike.z),
            fmt(spike.gain),
            f"{spike.rank_in}→{spike.rank_out}",
            spike.changed_by or "",
        ]
        for name, spike in spikes
    ] or [[NO_SPIKE, *[""] * 8]]
    headers = ["module", "token", "dim", "x", "y", "z", "gain", "rank", "by"]
    drops = {"gain": 1, "by": 2, "y": 3, "z": 4}
    columns = columns_of(headers, rows, {"module", "token", "by"}, drops)
    return FitTable(f"largest spikes: {spike_rule(result)}", columns, caption, wide)


TOKEN_WIDTH = 8  # characters of a token's repr in a column of places (`t4 ' jump…'`)


def order_table(result: StatsResult, wide: bool = False) -> FitTable:
    """Per module: the massive activations' ranks kept, then whether the z-rule outliers'
    ranks and pairwise order survive the norm (where 80 columns are few, without the top-k
    retention, then the bias, centre and pairs)."""
    caption = (
        "massive: massive activations whose rank by |y| is their rank by |x|, of all; the "
        "other columns are of the z-rule outliers (not massive): kept, the same share; "
        "pairs: same-token pairs in the same order; centre / weight / bias: changes of "
        f"rank laid at each stage; top-{result.top_k}: secondary, all dims (median)"
    )
    rows: list[list[Cell]] = [
        [name, *_order_cells([norm])]
        for name, norm in zip(_short(result), result.norms, strict=True)
    ]
    rows.append(["all", *_order_cells(result.norms)])
    headers = ["module", "massive", "outliers", "kept", "pairs", "centre", "weight", "bias"]
    headers.append(f"top-{result.top_k}")
    drops = {headers[-1]: 1, "bias": 2, "centre": 3, "pairs": 4}
    columns = columns_of(headers, rows, {"module"}, drops)
    title = "does each norm keep the order of its spikes?"
    return FitTable(title, columns, caption, wide, ends=frozenset({len(rows) - 2}))


def _order_cells(norms: list[NormStats]) -> list[str]:
    massive, totals = order_totals(norms, "massive"), order_totals(norms, "outlier")
    if not totals.norms:
        return ["—"] * 8
    spikes = f"{totals.spikes}" + (f" ({totals.ranked})" if totals.ranked < totals.spikes else "")
    orders = [n.order.topk_retention.ravel() for n in norms if n.order is not None]
    return [
        f"{massive.kept}/{massive.ranked}" if massive.ranked else "—",
        spikes,
        _percent(totals.rank_kept),
        _percent(totals.pair_share),
        str(totals.centre),
        str(totals.weight),
        str(totals.bias),
        fmt(nan_median(np.concatenate(orders))),
    ]


def _percent(share: float) -> str:
    return f"{share:.0%}" if math.isfinite(share) else "—"


CENSUS_TITLES = {
    "massive": "massive activations by dimension, residual stream (Sun et al.'s rule)",
    "outlier": "z-rule outliers by dimension, residual stream (not massive)",
    "all": "spike census: the dimensions that spike most in the residual stream",
}


def census_table(
    result: StatsResult | AggregateResult, limit: int = 8, kind: str = "all", wide: bool = False
) -> RenderableType:
    """The dimensions with the most spikes of `kind` over the model: where, how often, on
    which tokens, and where the largest |x| sits (where 80 columns are few, without at and
    seqs); the layers and tokens wrap between their items, never inside one."""
    rows = census_rows(result, limit, kind)
    if not rows:  # one line under the title: an empty row would squeeze the headers
        return Group(Phrases(CENSUS_TITLES[kind], " · ", "bold"), "none of this kind in any module")
    caption = (
        "seqs: share of sequences with one at one norm at least; t0: share of them on the "
        "first token; max |x| over every norm of the residual stream (with a spike in the "
        "dimension or not), at: its sequence/token"
    )
    cells: list[list[Cell]] = [
        [
            str(row.dim),
            str(row.count),
            tuple(layer_span(row.layers).split(", ")),
            _percent(row.sequences),
            _percent(row.first_token_share),
            magnitude(row.max_abs),
            f"s{row.max_at[0]} t{row.max_at[1]}" if len(row.max_at) == 2 else "",
            tuple(f"{token_text(token)} {n}" for token, n in row.tokens) or ("",),
        ]
        for row in rows
    ]
    headers = ["dim", "count", "layers", "seqs", "t0", "max |x|", "at", "tokens"]
    columns = columns_of(headers, cells, {"layers", "tokens", "at"}, {"at": 1, "seqs": 2})
    return FitTable(CENSUS_TITLES[kind], columns, caption, wide)


def ablation_table(result: StatsResult) -> FitTable:
    """The loss with the first layer's massive activations replaced (Sun et al. 2024): the
    run's own change, and its spread over the other texts the mean was taken over."""
    ablation = result.ablation
    assert ablation is not None
    if ablation.layer is None:
        title = (
            f"ablation: no massive activation at a residual norm{ablation.where()}, "
            "nothing replaced"
        )
    else:
        dims = ", ".join(map(str, ablation.dims))
        title = (
            f"ablation at layer {ablation.layer} ({ablation.module}): "
            f"{ablation.entries} massive entries in dims {dims}"
        )
    rows: list[list[Cell]] = [["unchanged", fmt(ablation.loss), "", ""]]
    for label, loss, changes in (
        (
            f"set to their mean over {ablation.texts} other texts",
            ablation.loss_mean,
            ablation.changes_mean,
        ),
        ("set to 0", ablation.loss_zero, ablation.changes_zero),
    ):
        rows.append([label, fmt(loss), loss_change(loss - ablation.loss), _spread(changes)])
    headers = ["massive activations", "loss", "Δ", f"Δ over {ablation.texts} other texts"]
    columns = columns_of(headers, rows, {"massive activations"}, {})
    columns[0].wrap = True  # its words
    return FitTable(title, columns, ablation_caption(ablation))


def ablation_caption(ablation: Ablation) -> str:
    """What the mean is, and what it cannot show."""
    parts = [
        "LM loss of the text; Δ: against the unchanged run; over other texts: mean ± sd "
        "of the same change on each (its mean over the rest)"
    ]
    if ablation.mean_is_value:
        parts.append("every mean equals the value it replaces: that row tests nothing")
    if ablation.no_mean:
        dims = ", ".join(map(str, ablation.no_mean))
        parts.append(f"dims {dims}: no other text has them, so they are kept in that row")
    return "; ".join(parts)


def loss_change(change: float) -> str:
    return f"{change:+.3g}" if math.isfinite(change) else "—"


def _spread(changes: list[float]) -> str:
    mean, sd = spread(changes)
    if not math.isfinite(mean):
        return "—"
    return f"{mean:+.3g} ± {sd:.2g}" if math.isfinite(sd) else f"{mean:+.3g}"
