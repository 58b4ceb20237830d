"""The spike records of one module's calls as result objects, on the host, at the end of a run.

Calls follow each other along the sequence axis, as the statistics do. The listed spikes of
all calls are merged and the largest |x| kept; order counts add up; across-token entries
are per sequence; the census adds every call's counters (lninspect.hooks.census).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lninspect.hooks.census import Census, share
from lninspect.hooks.layout import Layout
from lninspect.hooks.reduce import gather
from lninspect.hooks.spikes import KINDS, ORDER_COUNTS, STAGE_CODES, Record
from lninspect.options import SpikeOptions
from lninspect.results import AcrossToken, ChangedBy, KindOrder, OrderStats, Spike

Pieces = Callable[[int], str]  # token id -> its text


def collect_spikes(
    records: list[Record],
    options: SpikeOptions,
    token_ids: list[list[int]] | None = None,
    piece: Pieces | None = None,
) -> tuple[dict[str, Any], Census]:
    """NormStats fields (spikes, order, across_token, census) and the module's census.

    `token_ids` are the run's sequences (InputInfo.token_ids) and `piece` turns an id into
    its text; without them the census lists no tokens. The records are on the host already:
    `Capture.result` moves every record in one copy per (device, dtype) before this.
    """
    width = int(records[0]["census_count"].shape[0])
    census = Census(width, torch.device("cpu"))
    spikes: list[Spike] = []
    across: list[AcrossToken] = []
    offset = 0
    for record in records:
        layout = Layout.from_tensor(record["layout"])
        host = {k: v.numpy() for k, v in record.items() if k != "layout"}
        spikes += _spikes(host, offset, layout)
        across += _across(host, offset, layout)
        census.update(record, _ids(token_ids, offset, layout))
        offset += layout.sequences
    spikes.sort(key=lambda s: -abs(s.value))
    fields = {
        "spikes": spikes[: options.max_spikes],
        "order": _order(records),
        "across_token": across,
        "census": census.entries(options.census_dims, piece),
        "dimensions": census.dimensions(options.outlier_k),
    }
    return fields, census


def _order(records: list[Record]) -> OrderStats:
    summed = torch.stack([r["order_counts"] for r in records]).sum(0)  # (kinds, counts)
    kinds = {kind: _kind(row) for kind, row in zip(KINDS, summed.tolist(), strict=True)}
    every = kinds["all"]
    return OrderStats(
        spikes=every.spikes,
        ranked=every.ranked,
        rank_kept=every.rank_kept,
        pairs=every.pairs,
        pairs_kept=every.pairs_kept,
        changed_by=every.changed_by,
        spike_count=gather([r["spike_count"] for r in records]).astype(np.int64),
        topk_retention=gather([r["topk_retention"] for r in records]),
        massive=kinds["massive"],
        outlier=kinds["outlier"],
    )


def _kind(counts: list[int]) -> KindOrder:
    totals = dict(zip(ORDER_COUNTS, counts, strict=True))
    return KindOrder(
        spikes=totals["spikes"],
        ranked=totals["ranked"],
        rank_kept=share(totals["rank_kept"], totals["ranked"]),
        pairs=totals["pairs"],
        pairs_kept=share(totals["pairs_kept"], totals["pairs"]),
        changed_by=ChangedBy(**{stage: totals[stage] for stage in STAGE_CODES.values()}),
    )


def _spikes(r: dict[str, np.ndarray], offset: int, layout: Layout) -> list[Spike]:
    heads = layout.heads > 1
    return [
        Spike(
            sequence=int(r["spike_sequence"][i]) + offset,
            token=int(r["spike_token"][i]),
            head=int(r["spike_head"][i]) if heads else None,
            dim=int(r["spike_dim"][i]),
            value=float(r["spike_value"][i]),
            out_value=float(r["spike_out"][i]),
            z=float(r["spike_z"][i]),
            massive=bool(r["spike_massive"][i]),
            rank_in=int(r["spike_rank_in"][i]),
            rank_centred=int(r["spike_rank_centred"][i]),
            rank_weighted=int(r["spike_rank_weighted"][i]),
            rank_out=int(r["spike_rank_out"][i]),
            changed_by=STAGE_CODES.get(int(r["spike_stage"][i])),
            gain=float(r["spike_gain"][i]),
            bias=float(r["spike_bias"][i]) if "spike_bias" in r else None,
        )
        for i in np.flatnonzero(r["spike_valid"])
    ]


def _across(r: dict[str, np.ndarray], offset: int, layout: Layout) -> list[AcrossToken]:
    columns = np.flatnonzero(r["across_valid"])
    return [
        AcrossToken(
            dim=int(r["across_dim"][a]),
            rho=float(r["across_rho"][s, a]),
            rho_abs=float(r["across_rho_abs"][s, a]),
            compression_in=float(r["across_compression_in"][s, a]),
            compression_out=float(r["across_compression_out"][s, a]),
            sequence=offset + s,
            head=int(r["across_head"][a]) if layout.heads > 1 else None,
            tokens=layout.tokens,
        )
        for s in range(r["across_rho"].shape[0])
        for a in columns
    ]


def _ids(token_ids: list[list[int]] | None, offset: int, layout: Layout) -> torch.Tensor | None:
    """The token ids of one call's sequences, when they are known and fit its shape."""
    if not token_ids:
        return None
    rows = token_ids[offset : offset + layout.sequences]
    if len(rows) != layout.sequences or any(len(row) != layout.tokens for row in rows):
        return None
    return torch.tensor(rows, dtype=torch.int64)
