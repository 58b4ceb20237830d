"""The spike census of one module: which dimensions spike, how often, where and on what tokens.

    census = Census(d, device)
    for record, ids in calls:            # spike records (lninspect.hooks.spikes) and token ids
        census.update(record, ids)       # device work only, fixed-size state
    entries = census.entries(16, piece)  # on the host, at the end

The state has a fixed size, whatever the corpus: per dimension the spike count, the spikes
on the first token, the sequences with a spike, the largest |x| and |y|, and the ranked
spikes per range of positions; and one table of the `capacity` most frequent (token id,
dimension) pairs of ranked spikes, merged batch by batch by sorting (exact as long as fewer
distinct pairs occur; `evicted` counts what fell out otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial

import numpy as np
import torch

from lninspect.hooks.layout import Layout
from lninspect.hooks.spikes import Record
from lninspect.hooks.transfer import to_host
from lninspect.results import (
    CensusEntry,
    DimensionStats,
    PositionCount,
    SpikeCounts,
    TokenCount,
    Trajectory,
)

Tensor = torch.Tensor
# Position ranges [0, 1), [1, 2), [2, 3), [3, 4), [4, 8), [8, 16), ... up to 2^20 tokens.
POSITION_EDGES = np.array([0, 1, 2, 3] + [2**e for e in range(2, 21)], dtype=np.int64)
TOKEN_TABLE = 4096  # (token id, dim) pairs kept per module
TOKENS_LISTED = 5  # tokens shown per census entry
TRAJECTORY_DIMS = 5  # dimensions in the depth trajectory


class Census:
    """Fixed-size spike census of one module with `width` dimensions, on `device`."""

    def __init__(self, width: int, device: torch.device, capacity: int = TOKEN_TABLE) -> None:
        self.width = width
        self.device = device
        zeros = torch.zeros(width, dtype=torch.int64, device=device)
        self.count, self.first, self.sequences = zeros.clone(), zeros.clone(), zeros.clone()
        self.massive, self.massive_first = zeros.clone(), zeros.clone()
        self.max_sequence, self.max_token = zeros.clone(), zeros.clone()
        self.max_in = torch.zeros(width, device=device)
        self.max_out = torch.zeros(width, device=device)
        self.sum_in = torch.zeros(width, device=device)  # sum over tokens of |x_j|
        self.sum_out = torch.zeros(width, device=device)
        self.tokens = torch.zeros((), dtype=torch.int64, device=device)  # (token, head) rows
        self.seen = 0  # sequences seen, a host int from shapes
        bins = len(POSITION_EDGES) - 1
        self.positions = torch.zeros(width * bins, dtype=torch.int64, device=device)
        self.keys = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        self.key_counts = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.evicted = torch.zeros((), dtype=torch.int64, device=device)
        self.longest = 0  # the longest token axis seen (a host int, from shapes)
        self._edges = torch.tensor(POSITION_EDGES[1:-1], device=device)

    @torch.no_grad()
    def update(self, record: Record, ids: Tensor | None) -> None:
        """Add one call's spike record; `ids` (sequences, tokens) are its token ids, if known."""
        layout = Layout.from_tensor(record["layout"])
        move = {k: record[k].to(self.device) for k in record if k.startswith("census_")}
        summed = ("count", "first", "massive", "massive_first", "sequences", "sum_in", "sum_out")
        for key in summed:
            getattr(self, key).add_(move[f"census_{key}"])
        self.tokens.add_(move["census_rows"])  # real (token, head) rows, padding left out
        larger = move["census_max_in"] > self.max_in  # the first largest is kept
        self.max_sequence = torch.where(
            larger, move["census_max_sequence"] + self.seen, self.max_sequence
        )
        self.max_token = torch.where(larger, move["census_max_token"], self.max_token)
        self.max_in = torch.fmax(self.max_in, move["census_max_in"])  # fmax: NaN is skipped
        self.max_out = torch.fmax(self.max_out, move["census_max_out"])
        self.longest = max(self.longest, layout.tokens)
        self.seen += layout.sequences
        ranked = record["ranked_dims"].to(self.device, torch.int64)  # (S, T, G, M)
        valid = ranked >= 0
        kind = record["ranked_massive"].to(self.device, torch.int64)  # 1: massive
        tokens = ranked.shape[1]
        position = torch.arange(tokens, device=self.device).view(1, tokens, 1, 1)
        position = (position - move["census_start"].view(-1, 1, 1, 1)).clamp(min=0)  # (S, T, 1, 1)
        bin_ = torch.bucketize(position, self._edges, right=True)  # from the first real token
        where = (ranked.clamp(min=0) * (len(POSITION_EDGES) - 1) + bin_).flatten()
        self.positions.index_add_(0, where, valid.flatten().to(torch.int64))
        if ids is not None and ids.numel() == ranked.shape[0] * tokens:
            ids = ids.to(self.device, torch.int64).reshape(ranked.shape[0], tokens, 1, 1)
            keys = torch.where(valid, (ids * self.width + ranked) * 2 + kind, -1).flatten()
            self._merge(keys, valid.flatten().to(torch.int64))

    def _merge(self, keys: Tensor, weights: Tensor) -> None:
        """Add (key, weight) pairs to the table and keep its `capacity` heaviest keys.

        Fixed sizes throughout: sort table and new pairs together, sum each run of equal
        keys into the run's first slot, take the top `capacity` sums.
        """
        keys = torch.cat([self.keys, keys])
        weights = torch.cat([self.key_counts, weights])
        keys = torch.where(weights > 0, keys, -1)
        ordered, order = keys.sort()
        starts = torch.ones_like(ordered, dtype=torch.bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        run = starts.cumsum(0) - 1  # the run of each sorted entry
        sums = torch.zeros_like(weights).index_add_(0, run, weights[order])
        run_keys = torch.full_like(ordered, -1).scatter_(0, run, ordered)
        sums = torch.where(run_keys >= 0, sums, 0)
        best = sums.topk(len(self.keys))
        self.evicted += sums.sum() - best.values.sum()
        self.keys = torch.where(best.values > 0, run_keys[best.indices], -1)
        self.key_counts = best.values

    @torch.inference_mode()  # the state was made inside the run's inference mode
    def all_reduce(self) -> None:
        """Combine the censuses of every torch.distributed rank; every rank gets the total."""
        import torch.distributed as dist

        summed = (self.count, self.first, self.massive, self.massive_first, self.sequences)
        for tensor in (
            *summed,
            self.sum_in,
            self.sum_out,
            self.positions,
            self.evicted,
            self.tokens,
        ):
            dist.all_reduce(tensor)
        dist.all_reduce(self.max_in, op=dist.ReduceOp.MAX)
        dist.all_reduce(self.max_out, op=dist.ReduceOp.MAX)
        world = dist.get_world_size()
        keys = [torch.empty_like(self.keys) for _ in range(world)]
        counts = [torch.empty_like(self.key_counts) for _ in range(world)]
        dist.all_gather(keys, self.keys)
        dist.all_gather(counts, self.key_counts)
        self.keys.fill_(-1)
        self.key_counts.zero_()
        self._merge(torch.cat(keys), torch.cat(counts))

    def entries(self, limit: int, piece: Callable[[int], str] | None) -> list[CensusEntry]:
        """The `limit` dimensions with the most spikes (ties: lower dim first), on the host;
        `piece` names the tokens (without it, tokens are listed by id)."""
        host = self._host(
            ("count", "first", "massive", "massive_first", "sequences", "max_in")
            + ("max_sequence", "max_token", "keys", "key_counts", "positions")
        )
        count, massive = host["count"], host["massive"]
        dims = [int(j) for j in np.argsort(-count, kind="stable")[:limit] if count[j] > 0]
        positions = host["positions"].reshape(self.width, -1)
        tokens = partial(_tokens, host["keys"], host["key_counts"], width=self.width, piece=piece)
        return [
            CensusEntry(
                dim=j,
                count=int(count[j]),
                max_abs=float(host["max_in"][j]),
                first_token_share=float(host["first"][j] / count[j]),
                positions=self._positions(positions[j]),
                tokens=tokens(j, None),
                sequences=int(host["sequences"][j]),
                massive=int(massive[j]),
                massive_first_share=share(host["massive_first"][j], massive[j]),
                max_at=[int(host["max_sequence"][j]), int(host["max_token"][j])],
                massive_tokens=tokens(j, True),
                outlier_tokens=tokens(j, False),
            )
            for j in dims
        ]

    def dimensions(self, k: float) -> DimensionStats:
        """Per-dimension |x| and |y| over every token seen, and the outlier dimensions: mean
        |x_j| more than k standard deviations above the mean over dimensions."""
        counts = ("count", "massive", "first", "massive_first", "sequences")
        host = self._host(
            ("sum_in", "sum_out", "max_in", "max_out", "tokens", "max_sequence", "max_token")
            + counts
        )
        rows = max(int(host["tokens"]), 1)
        dims = np.flatnonzero(host["count"] > 0)
        mean_in = (host["sum_in"] / rows).astype(np.float32)
        mean_out = (host["sum_out"] / rows).astype(np.float32)
        return DimensionStats(
            tokens=int(host["tokens"]),
            k=k,
            mean_abs_in=mean_in,
            max_abs_in=host["max_in"],
            mean_abs_out=mean_out,
            max_abs_out=host["max_out"],
            outliers_in=outlier_dims(mean_in, k),
            outliers_out=outlier_dims(mean_out, k),
            spiking=SpikeCounts(
                [int(j) for j in dims], *([int(v) for v in host[c][dims]] for c in counts)
            ),
            max_at_in=np.stack([host["max_sequence"], host["max_token"]], axis=1),
        )

    def _host(self, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The state tensors `keys` as numpy arrays, in one copy per dtype
        (lninspect.hooks.transfer)."""
        moved = to_host([getattr(self, key) for key in keys])
        return {key: tensor.numpy() for key, tensor in zip(keys, moved, strict=True)}

    def _positions(self, counts: np.ndarray) -> list[PositionCount]:
        return [
            PositionCount(
                start=int(POSITION_EDGES[b]),
                stop=int(min(POSITION_EDGES[b + 1], max(self.longest, POSITION_EDGES[b] + 1))),
                count=int(n),
            )
            for b, n in enumerate(counts)
            if n > 0
        ]


def _tokens(
    keys: np.ndarray,
    counts: np.ndarray,
    dim: int,
    massive: bool | None,
    width: int,
    piece: Callable[[int], str] | None,
) -> list[TokenCount]:
    """The tokens most often carrying dimension `dim`'s ranked spikes (of one kind, or
    both), most first; ties: the lower token id first."""
    pair, kind = keys // 2, keys % 2
    mine = (keys >= 0) & (pair % width == dim)
    if massive is not None:
        mine &= kind == int(massive)
    ids = pair[mine] // width
    total: dict[int, int] = {}
    for i, n in zip(ids.tolist(), counts[mine].tolist(), strict=True):
        total[i] = total.get(i, 0) + n
    order = sorted(total, key=lambda i: (-total[i], i))[:TOKENS_LISTED]
    return [TokenCount(token=piece(i) if piece else f"#{i}", count=total[i], id=i) for i in order]


def share(part: float, whole: float) -> float:
    """part / whole, NaN for nothing (never a number made up from nothing)."""
    return float(part / whole) if whole else float("nan")


def outlier_dims(mean_abs: np.ndarray, k: float) -> list[int]:
    """Dimensions whose mean |value| is more than k standard deviations (over dimensions)
    above the mean over dimensions (Kovaleva et al. 2021; Puccetti et al. 2022), largest first."""
    values = np.asarray(mean_abs, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return []
    limit = finite.mean() + k * finite.std()
    found = np.flatnonzero(values > limit)
    return [int(j) for j in found[np.argsort(-values[found], kind="stable")]]


def trajectory(
    censuses: dict[str, Census],
    width: int | None,
    residual: Collection[str],
    limit: int = TRAJECTORY_DIMS,
) -> Trajectory | None:
    """The `limit` dimensions of largest max |x| over the norms that read the residual
    stream (the names in `residual`) of `width` (the model's width; the most common one when
    None), with their max |x| and |y| at each of them. None without such norms."""
    censuses = {name: c for name, c in censuses.items() if name in residual}
    widths = [c.width for c in censuses.values()]
    if not widths:
        return None
    width = width if width in widths else max(set(widths), key=widths.count)
    names = [name for name, c in censuses.items() if c.width == width]
    host = to_host([c for n in names for c in (censuses[n].max_in, censuses[n].max_out)])
    max_in = np.stack([t.numpy() for t in host[0::2]], axis=1)  # (d, norms)
    max_out = np.stack([t.numpy() for t in host[1::2]], axis=1)
    peak = np.nan_to_num(max_in, nan=-np.inf).max(axis=1)
    dims = [int(j) for j in np.argsort(-peak, kind="stable")[:limit]]
    return Trajectory(dims=dims, norms=names, max_abs_in=max_in[dims], max_abs_out=max_out[dims])
