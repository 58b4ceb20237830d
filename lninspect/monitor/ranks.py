"""A recorded step's norm records over every rank of torch.distributed, in two collectives.

Each rank reduces its own tokens on its device as one process does (the capture), then
summarises each norm's per-token arrays in the fixed bins of lninspect.monitor.bins. One
all-reduce sums the bin counts, the non-finite counts and the tokens; one all-gather brings
every rank's min and max of each statistic, its largest |x| with the dimension and the token
where it sits, and its loss. Every rank then builds the same records (rank 0 writes them):
quantiles from the summed counts, exact min and max, the largest |x| over all ranks with
its rank (the lowest on a tie) and token, non-finite counts summed, the mean of the ranks'
losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from lninspect.monitor.bins import NUM_BINS, bin_counts, bin_quantiles, value_range
from lninspect.norms.discovery import NormInfo
from lninspect.results import NormStats, StatsResult
from lninspect.results.watch import QUANTILE_FIELDS, QUANTILES, NormRecord, Quantiles
from lninspect.trends import float32_digits, token_values

GATHERED = 3 + 2 * len(QUANTILE_FIELDS)  # absmax, its dim, its token, (min, max) per statistic
SUMMED = len(QUANTILE_FIELDS) * NUM_BINS + 2  # bin counts, nonfinite, grad_nonfinite


@dataclass
class Combined:
    """The records of a step over all ranks, its tokens and its loss (mean over ranks)."""

    norms: list[NormRecord]
    tokens: int
    loss: float


def world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed; (0, 1) without it."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(ok: bool, world_size: int) -> bool:
    """Whether every rank is ok (one all-reduce; `ok` itself with one process)."""
    if world_size == 1:
        return ok
    flag = torch.tensor([int(ok)], device=collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def collective_device() -> torch.device:
    """Where the default group's collectives run: the current GPU for nccl, else the CPU."""
    backend = str(dist.get_backend())
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def combine(
    norms: Sequence[NormInfo], result: StatsResult | None, loss: float, sum_losses: bool = False
) -> Combined:
    """This rank's result (None: no training pass here) combined with every other rank's.

    The step's loss is the mean of the ranks' losses, or their sum with `sum_losses`."""
    found = {n.name: n for n in result.norms} if result is not None else {}
    stats = [found.get(info.name) for info in norms]
    gathered = np.concatenate([local_extremes(s) for s in stats] + [np.array([loss])])
    summed = np.concatenate([local_counts(s) for s in stats])
    tokens = result.input.num_tokens if result is not None else 0
    all_gathered, all_summed = exchange(gathered, np.append(summed, tokens))
    per_norm = all_gathered[:, :-1].reshape(len(all_gathered), len(norms), GATHERED)
    counts = all_summed[:-1].reshape(len(norms), SUMMED)
    records = [combined_record(info, per_norm[:, i], counts[i]) for i, info in enumerate(norms)]
    losses = all_gathered[:, -1]
    losses = losses[np.isfinite(losses)]
    value = (losses.sum() if sum_losses else losses.mean()) if losses.size else math.nan
    return Combined(records, int(all_summed[-1]), float(value))


def exchange(gathered: np.ndarray, summed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(world, n) float64 of every rank's `gathered`, and the int64 sum of `summed` over ranks."""
    if world()[1] == 1:  # one process: its own numbers (a reference for the tests)
        return gathered[None], summed
    device = collective_device()
    mine = torch.from_numpy(gathered).to(device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    total = torch.from_numpy(summed).to(device)
    dist.all_reduce(total)
    return torch.stack(every).cpu().numpy(), total.cpu().numpy()


def local_extremes(norm: NormStats | None) -> np.ndarray:
    """(GATHERED,) float64: largest |x| (-inf: none), its dim and token, min and max of each."""
    out = np.full(GATHERED, -1.0)
    out[0] = -math.inf
    if norm is None:
        out[3:] = [math.inf, -math.inf] * len(QUANTILE_FIELDS)
        return out
    absmax = np.asarray(norm.input.absmax, dtype=np.float64).ravel()
    finite = np.isfinite(absmax)
    if finite.any():
        token = int(np.argmax(np.where(finite, absmax, -np.inf)))
        out[:3] = absmax[token], np.ravel(norm.input.absmax_dim)[token], token
    values = token_values(norm)
    for k, key in enumerate(QUANTILE_FIELDS):
        array = values[key]
        out[3 + 2 * k : 5 + 2 * k] = (
            value_range(np.asarray(array)) if array is not None else (math.inf, -math.inf)
        )
    return out


def local_counts(norm: NormStats | None) -> np.ndarray:
    """(SUMMED,) int64: the bin counts of each statistic, then the two non-finite counts."""
    out = np.zeros(SUMMED, dtype=np.int64)
    if norm is None:
        return out
    values = token_values(norm)
    for k, key in enumerate(QUANTILE_FIELDS):
        if values[key] is not None:
            out[k * NUM_BINS : (k + 1) * NUM_BINS] = bin_counts(np.asarray(values[key]))
    out[-2] = _total(norm.input.nonfinite)
    out[-1] = _total(norm.grad.output_nonfinite if norm.grad is not None else None)
    return out


def _total(counts: np.ndarray | None) -> int:
    return int(np.nansum(np.asarray(counts, dtype=np.float64))) if counts is not None else 0


def combined_record(info: NormInfo, ranks: np.ndarray, summed: np.ndarray) -> NormRecord:
    """One norm's record from every rank's extremes (world, GATHERED) and the summed counts."""
    owner = int(np.argmax(ranks[:, 0]))  # the first rank holding the largest |x|
    top = ranks[owner, 0]
    stats = {}
    for k, key in enumerate(QUANTILE_FIELDS):
        low = float(ranks[:, 3 + 2 * k].min())
        high = float(ranks[:, 4 + 2 * k].max())
        counts = summed[k * NUM_BINS : (k + 1) * NUM_BINS]
        values = [*bin_quantiles(counts, low, high, QUANTILES), high if counts.sum() else math.nan]
        stats[key] = Quantiles.of([float32_digits(v) for v in values])
    found = math.isfinite(top)
    return NormRecord(
        name=info.name,
        layer=info.layer,
        role=info.role,
        quantiles=stats,
        absmax=float32_digits(top) if found else math.nan,
        absmax_dim=int(ranks[owner, 1]) if found else -1,
        absmax_rank=owner if found else -1,
        absmax_token=int(ranks[owner, 2]) if found else -1,
        nonfinite=int(summed[-2]),
        grad_nonfinite=int(summed[-1]),
    )
