"""Rich tables of spike and order results: the largest spikes, and order kept per module."""

from __future__ import annotations

import numpy as np
from rich import box
from rich.table import Table

from lninspect.render.format import fmt, short_names, token_label
from lninspect.results import NormStats, Spike, StatsResult
from lninspect.summary import nan_quantiles


def top_spikes(result: StatsResult, limit: int = 20) -> list[tuple[str, Spike]]:
    """The `limit` spikes of largest |z| over all modules, with their (short) module names."""
    names = dict(
        zip(
            (n.name for n in result.norms), short_names([n.name for n in result.norms]), strict=True
        )
    )
    pairs = [(names[n.name], s) for n in result.norms for s in n.spikes or []]
    return sorted(pairs, key=lambda pair: -abs(pair[1].z))[:limit]


def spikes_table(result: StatsResult, limit: int = 20) -> Table:
    """The largest spikes: where, how large, and their rank before and after the norm."""
    table = Table(
        title=f"largest spikes (|z| >= {fmt(result.spike_z or float('nan'))}, or "
        "massive: |x| > 100 and > 1000 x the token's median |x|)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        caption="rank: 1 = the token's largest |x - centre| (in) and |y - bias| (out)",
    )
    for column in ("module", "token", "dim", "x", "z", "y", "rank in → out", "massive"):
        table.add_column(column, justify="left" if column in ("module", "token") else "right")
    for name, spike in top_spikes(result, limit):
        table.add_row(
            name,
            token_label(result, spike.sequence, spike.token),
            str(spike.dim),
            fmt(spike.value),
            fmt(spike.z),
            fmt(spike.out_value),
            f"{spike.rank_in} → {spike.rank_out}",
            "yes" if spike.massive else "",
        )
    return table


def order_table(result: StatsResult) -> Table:
    """Per module: how well the norm keeps the order of each token's activations."""
    table = Table(
        title="order kept by each norm",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        caption=(
            "within-token: Spearman of x vs y over the hidden dims (z: before the "
            "affine step, 1 by construction); top-k: share of the k largest |x - centre| "
            "among the k largest |y - bias|; across tokens: Spearman of x[:, j] vs "
            "y[:, j] over tokens, for the dims j that spike somewhere"
        ),
    )
    for column in (
        "module",
        "role",
        "spikes",
        "within-token med / min",
        "z med",
        f"top-{result.top_k} kept med",
        "across tokens med / min (dims)",
    ):
        table.add_column(column, justify="left" if column in ("module", "role") else "right")
    for name, norm in zip(short_names([n.name for n in result.norms]), result.norms, strict=True):
        table.add_row(name, norm.role, *_order_cells(norm))
    return table


def _order_cells(norm: NormStats) -> list[str]:
    order = norm.order
    if order is None:
        return ["—"] * 5
    within_min, within_med = nan_quantiles(order.within_token_spearman, (0.0, 0.5))
    across = np.array([a.rho for a in norm.across_token_spearman or []], dtype=np.float64)
    across_min, across_med = nan_quantiles(across, (0.0, 0.5))
    return [
        str(int(np.nansum(order.spike_count))),
        f"{fmt(within_med)} / {fmt(within_min)}",
        fmt(nan_quantiles(order.within_token_spearman_z, (0.5,))[0]),
        fmt(nan_quantiles(order.topk_retention, (0.5,))[0]),
        f"{fmt(across_med)} / {fmt(across_min)} ({across.size})" if across.size else "—",
    ]
