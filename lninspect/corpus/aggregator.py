"""Streaming aggregation of per-token statistics over a corpus, in fixed memory.

    agg = Aggregator(norms, positions=1024, device=device, spikes=False)
    for ids in batches:
        model(ids)
        agg.update(cap.drain(), ids.shape)   # per-call records of this batch, then forgotten
    agg.all_reduce()                         # under torch.distributed: every rank the same
    result = agg.result(...)

For every module, statistic and position the state holds count, mean, M2 (sum of squared
deviations), min and max in float64: a batch's moments are computed on the device and merged
with Chan et al.'s formula. Per module it also holds fixed-bin histograms of the per-token
denominator (log-spaced bins) and of spike counts, which add up exactly across processes.
The state lives on one device (the CPU for MPS, which has no float64); its size depends on
the model and seq_len only, never on the corpus.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch

from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.hooks.census import Census
from lninspect.hooks.transfer import descriptions
from lninspect.norms.discovery import NormInfo
from lninspect.results.aggregate import MOMENT_KEYS, SPIKE_KEY, Histogram, Moments, NormAggregate
from lninspect.statistics import denominator_key

Tensor = torch.Tensor
Record = dict[str, Tensor]
# Per-token std / rms: 20 bins per decade from 1e-4 to 1e6 (each bin about 12 % wide).
DENOMINATOR_EDGES = np.logspace(-4, 6, 201)
# Spike counts per token: 0, 1, 2, 3, then two bins per doubling up to 2^20 dimensions.
SPIKE_EDGES = np.array(
    [0, 1, 2, 3] + [m * 2**e for e in range(2, 20) for m in (1, 1.5)] + [2**20], dtype=np.float64
)


class Aggregator:
    """Per-position moments and per-module histograms of every norm, merged batch by batch."""

    def __init__(
        self, norms: list[NormInfo], positions: int, device: torch.device, spikes: bool = False
    ) -> None:
        self.norms = list(norms)
        self.keys = MOMENT_KEYS + ((SPIKE_KEY,) if spikes else ())
        self.device = torch.device("cpu") if device.type == "mps" else device
        self.positions = positions
        rows = len(self.norms) * len(self.keys)  # row m * K + k: module m, statistic k
        self.count = self._full((rows, positions), 0.0)
        self.mean = self._full((rows, positions), 0.0)
        self.m2 = self._full((rows, positions), 0.0)
        self.min = self._full((rows, positions), torch.inf)
        self.max = self._full((rows, positions), -torch.inf)
        self.nonfinite = self._full((rows,), 0)
        # Host-side counters: no device work, and no host-device copy, per batch.
        self.calls = [0] * len(self.norms)
        self.sequences = 0
        self.tokens = 0
        self._module_index: dict[tuple[int, ...], Tensor] = {}
        self._edges = {
            "den": torch.tensor(DENOMINATOR_EDGES, device=self.device),
            "spike": torch.tensor(SPIKE_EDGES, device=self.device),
        }
        # columns: underflow, the bins, overflow, and one for non-finite values (not reported)
        self.hist = {"den": self._full((len(self.norms), len(DENOMINATOR_EDGES) + 2), 0)}
        if spikes:
            self.hist["spike"] = self._full((len(self.norms), len(SPIKE_EDGES) + 2), 0)
        den = [self.keys.index(denominator_key(n.kind)) for n in self.norms]
        self._den_row = torch.tensor(den, device=self.device)  # (modules,): row of each's den
        self.census: dict[str, Census] = {}  # per module, made at its first spike record

    def _full(self, shape: tuple[int, ...], value: float) -> Tensor:
        """State: float64 for a float `value`, int64 for an int one, on the state's device."""
        dtype = torch.float64 if isinstance(value, float) else torch.int64
        return torch.full(shape, value, dtype=dtype, device=self.device)

    @torch.no_grad()
    def update(
        self,
        records: dict[str, list[Record]],
        batch_shape: tuple[int, int],
        ids: Tensor | None = None,
    ) -> None:
        """Merge one batch's per-call records (Capture.drain()) of input ids (batch, tokens);
        with spikes, `ids` (the ids on the model's device) name the census's tokens."""
        batch, tokens = batch_shape
        if "spike" in self.hist:
            self._update_census(records, ids)
        if tokens > self.positions:
            raise ValueError(f"{tokens} tokens per sequence > {self.positions} positions")
        groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = defaultdict(list)
        for m, norm in enumerate(self.norms):
            calls = records.get(norm.name, [])
            self.calls[m] += len(calls)  # a Python int
            for record in calls:
                values = torch.stack([record[k].to(self.device, torch.float32) for k in self.keys])
                values = _by_position(values, batch, tokens, norm.name)  # (K, samples, tokens)
                groups[tuple(values.shape)].append((m, values))
        for members in groups.values():
            modules = self._modules(tuple(m for m, _ in members))
            self._merge(modules, torch.cat([v for _, v in members]))  # (G * K, samples, tokens)
        self.sequences += batch
        self.tokens += batch * tokens

    def _update_census(self, records: dict[str, list[Record]], ids: Tensor | None) -> None:
        """Add each call's spike record to its module's census (fixed size, device only)."""
        for norm in self.norms:
            for record in records.get(norm.name, []):
                if "census_count" not in record:
                    continue
                if norm.name not in self.census:
                    width = int(record["census_count"].shape[0])
                    self.census[norm.name] = Census(width, self.device)
                self.census[norm.name].update(record, ids)

    def _modules(self, indices: tuple[int, ...]) -> Tensor:
        """Module indices as a device tensor, made once (a copy per batch would sync CUDA)."""
        if indices not in self._module_index:
            self._module_index[indices] = torch.tensor(indices, device=self.device)
        return self._module_index[indices]

    def _merge(self, modules: Tensor, values: Tensor) -> None:
        """Chan's merge of one group's batch moments into the rows of `modules`."""
        k = len(self.keys)
        rows = (modules[:, None] * k + torch.arange(k, device=self.device)).flatten()
        t = values.shape[-1]
        finite = values.isfinite()
        n = finite.sum(1, dtype=torch.float64)  # (rows, t)
        x = torch.where(finite, values, 0).double()
        mean_b = x.sum(1) / n.clamp(min=1)
        m2_b = torch.where(finite, x - mean_b[:, None], 0).square().sum(1)
        count_a, mean_a = self.count[rows, :t], self.mean[rows, :t]
        total = count_a + n
        delta = mean_b - mean_a
        weight = n / total.clamp(min=1)
        self.mean[rows, :t] = mean_a + delta * weight
        self.m2[rows, :t] = self.m2[rows, :t] + m2_b + delta.square() * count_a * weight
        self.count[rows, :t] = total
        self.min[rows, :t] = torch.minimum(
            self.min[rows, :t], torch.where(finite, x, torch.inf).amin(1)
        )
        self.max[rows, :t] = torch.maximum(
            self.max[rows, :t], torch.where(finite, x, -torch.inf).amax(1)
        )
        self.nonfinite[rows] += (~finite).sum((1, 2))
        per_module = values.view(len(modules), k, -1)  # (G, K, samples * t), NaN kept
        den = per_module[torch.arange(len(modules), device=self.device), self._den_row[modules]]
        self._count_bins("den", modules, den.double())
        if "spike" in self.hist:
            self._count_bins("spike", modules, per_module[:, self.keys.index(SPIKE_KEY)].double())

    def _count_bins(self, which: str, modules: Tensor, values: Tensor) -> None:
        """Add (G, N) values of modules (G,) to their histograms in one scatter (bincount
        would read its size back from a CUDA device)."""
        hist = self.hist[which]
        columns = hist.shape[1]
        index = torch.bucketize(values, self._edges[which], right=True)  # 0: under, B+1: over
        index = torch.where(values.isfinite(), index, columns - 1)
        flat = (index + modules[:, None] * columns).flatten()
        hist.view(-1).index_add_(0, flat, torch.ones_like(flat))

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Combine the states of every torch.distributed rank; every rank gets the total.

        Counts, sums and histograms add up; the mean is sum(count * mean) / count and M2 the
        sum of each rank's M2 + count * (its mean - the mean)^2, all in float64.
        """
        import torch.distributed as dist

        count = self.count.clone()
        dist.all_reduce(count)
        weighted = self.mean * self.count
        dist.all_reduce(weighted)
        mean = weighted / count.clamp(min=1)
        m2 = self.m2 + self.count * (self.mean - mean).square()
        dist.all_reduce(m2)
        self.count, self.mean, self.m2 = count, mean, m2
        dist.all_reduce(self.min, op=dist.ReduceOp.MIN)
        dist.all_reduce(self.max, op=dist.ReduceOp.MAX)
        for tensor in (self.nonfinite, *self.hist.values()):
            dist.all_reduce(tensor)
        for census in self.census.values():  # every rank saw every module: the same keys
            census.all_reduce()
        counters = torch.tensor([*self.calls, self.sequences, self.tokens], device=self.device)
        dist.all_reduce(counters)
        *calls, self.sequences, self.tokens = counters.tolist()
        self.calls = calls

    def norm_results(
        self,
        census_dims: int = 16,
        piece: Callable[[int], str] | None = None,
        outlier_k: float = 3.0,
    ) -> list[NormAggregate]:
        """The state as result objects, on the CPU; `piece` names the census's token ids."""
        k = len(self.keys)
        state = {
            name: getattr(self, name).cpu().numpy()
            for name in ("count", "mean", "m2", "min", "max", "nonfinite")
        }
        hists = {w: h.cpu().numpy() for w, h in self.hist.items()}
        results = []
        for m, (norm, description) in enumerate(
            zip(self.norms, descriptions(self.norms), strict=True)
        ):
            positions = {key: _moments(state, m * k + i) for i, key in enumerate(self.keys)}
            results.append(
                NormAggregate(
                    **{
                        name: getattr(description, name)
                        for name in description.__dataclass_fields__
                    },
                    calls=self.calls[m],
                    positions=positions,
                    denominator_hist=_histogram(DENOMINATOR_EDGES, hists["den"][m]),
                    spike_count_hist=_histogram(SPIKE_EDGES, hists["spike"][m])
                    if "spike" in hists
                    else None,
                    census=self.census[norm.name].entries(census_dims, piece)
                    if norm.name in self.census
                    else None,
                    dimensions=self.census[norm.name].dimensions(outlier_k)
                    if norm.name in self.census
                    else None,
                )
            )
        return results


def _by_position(values: Tensor, batch: int, tokens: int, name: str) -> Tensor:
    """(K, batch, tokens, *extra) per-token values -> (K, samples, tokens), position last.

    A per-head norm's (batch, tokens, heads) pools its heads; a norm that sees the tokens
    flattened to (batch * tokens, ...) is unflattened.
    """
    k, shape = values.shape[0], values.shape[1:]
    if len(shape) >= 2 and shape[0] == batch and tokens in shape[1:]:
        axis = 2 + list(shape[1:]).index(tokens)
        return values.movedim(axis, -1).reshape(k, -1, tokens)
    if len(shape) >= 1 and shape[0] == batch * tokens:
        return values.reshape(k, batch, tokens, -1).movedim(2, -1).reshape(k, -1, tokens)
    raise LninspectError(
        f"cannot tell the token positions of {name}'s statistics "
        f"(shape {tuple(shape)} for a batch of {batch} x {tokens} tokens)",
        EXIT_RUNTIME,
    )


def _moments(state: dict[str, np.ndarray], row: int) -> Moments:
    count = state["count"][row].astype(np.int64)
    empty = count == 0
    pick = {k: np.where(empty, np.nan, state[k][row]) for k in ("mean", "m2", "min", "max")}
    return Moments(count=count, **pick, nonfinite=int(state["nonfinite"][row]))


def _histogram(edges: np.ndarray, columns: np.ndarray) -> Histogram:
    """Columns (underflow, bins..., overflow, non-finite) as a Histogram."""
    return Histogram(
        edges=edges,
        counts=columns[1:-2].astype(np.int64),
        underflow=int(columns[0]),
        overflow=int(columns[-2]),
    )
