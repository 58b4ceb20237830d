"""Numbers over training: a captured step reduced to a log record, and a log read back as
per-norm series, jumps and spikes for the tables and figures of `lninspect run`. No torch.

A jump: a summary of a norm (lninspect.statistics SUMMARIES, those that are positive:
median input std, median gradient scale, max |x|, ...) that, from
one recorded step to the next, grows or shrinks by JUMP_FACTOR or more, and by JUMP_CONTRAST
times more (in log scale) than the median change over the JUMP_WINDOW recorded steps before.
So a steady trend, even a fast one (the residual stream's growth early in training), is no
jump; a sudden break from it is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lninspect.derived import largest_abs, largest_finite, nan_quantiles, per_token
from lninspect.errors import LninspectError
from lninspect.results import NormStats, StatsResult
from lninspect.results.watch import (
    QUANTILES,
    NormRecord,
    ParamGroupGrad,
    Quantiles,
    WatchLog,
    WatchRecord,
)
from lninspect.roles import ordered_roles
from lninspect.statistics import SUMMARIES, Summary

JUMP_FACTOR = 2.0
JUMP_WINDOW = 5
JUMP_CONTRAST = 3.0

# From a captured step to a record ------------------------------------------------------------


def quantiles(values: np.ndarray | None) -> Quantiles:
    """q05 .. q95 and the max of the finite values (NaN for each when there are none)."""
    if values is None:
        return Quantiles.of([math.nan] * (len(QUANTILES) + 1))
    return Quantiles.of([float32_digits(v) for v in nan_quantiles(values, (*QUANTILES, 1.0))])


def float32_digits(value: float) -> float:
    """`value` to 7 significant digits: what a float32 statistic holds, and a shorter log."""
    return float(f"{value:.7g}") if math.isfinite(value) else value


def quantiles_of_each(arrays: Sequence[np.ndarray | None]) -> list[Quantiles]:
    """`quantiles` of each array; those of one shape and dtype with no NaN or Inf (the usual
    case) sorted together along an axis, then read off as np.quantile does (the same
    numbers: sorted_quantiles), without its cost per call or its partition."""
    out: list[Quantiles | None] = [None] * len(arrays)
    finite: dict[tuple[tuple[int, ...], np.dtype], list[tuple[int, np.ndarray]]] = {}
    for i, values in enumerate(arrays):
        if values is not None and np.isfinite(values).all():
            array = np.asarray(values)
            finite.setdefault((array.shape, array.dtype), []).append((i, array))
        else:
            out[i] = quantiles(values)
    for members in finite.values():
        rows = np.sort(np.stack([array.ravel() for _, array in members]), axis=1)
        table = sorted_quantiles(rows, (*QUANTILES, 1.0))  # (members, quantiles)
        for (i, _), row in zip(members, table.tolist(), strict=True):
            out[i] = Quantiles.of([float32_digits(v) for v in row])
    return [q for q in out if q is not None]


def sorted_quantiles(rows: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """np.quantile's default (linear) quantiles `qs` of each row of `rows` (sorted along
    axis 1), (rows, len(qs)) in float64: its virtual index (n - 1) q, the two order
    statistics around it and its interpolation, which is exact at both ends (a sort
    in any dtype is exact, so the result is np.quantile's to the bit)."""
    n = rows.shape[1]
    virtual = (n - 1) * np.asarray(qs, dtype=np.float64)
    below = np.floor(virtual)
    gamma = virtual - below
    low = rows[:, below.astype(np.intp)].astype(np.float64)
    high = rows[:, np.minimum(below.astype(np.intp) + 1, n - 1)].astype(np.float64)
    step = high - low
    return np.where(gamma >= 0.5, high - step * (1 - gamma), low + step * gamma)


def norm_records(norms: Sequence[NormStats]) -> list[NormRecord]:
    """Each norm's per-token arrays reduced to quantiles over tokens (lninspect.statistics
    SUMMARIES), and its largest |x|."""
    arrays = [token_values(norm) for norm in norms]
    flat = quantiles_of_each([values for per_norm in arrays for values in per_norm.values()])
    records = []
    for norm, per_norm in zip(norms, arrays, strict=True):
        peak = largest_abs(norm)
        found, flat = flat[: len(per_norm)], flat[len(per_norm) :]
        records.append(
            NormRecord(
                name=norm.name,
                layer=norm.layer,
                role=norm.role,
                absmax=float32_digits(peak.value),
                absmax_dim=peak.dim,
                quantiles=dict(zip(per_norm, found, strict=True)),
                scale=norm.scale,
            )
        )
    return records


def norm_record(norm: NormStats) -> NormRecord:
    """One norm's record (norm_records)."""
    return norm_records([norm])[0]


def token_values(norm: NormStats) -> dict[str, np.ndarray | None]:
    """The per-token arrays a record's quantiles are over, by summary key (None: absent)."""
    return {s.key: per_token(norm, s.of) for s in SUMMARIES if not s.peak}


def group_params(rows: Sequence[tuple[int | None, str, float]]) -> list[ParamGroupGrad]:
    """(layer, group, grad norm) per parameter tensor -> the L2 norm per (layer, group).

    Layers in order (outside the blocks, None, first); a group whose tensors got no gradient
    (NaN) has a NaN norm.
    """
    squares: dict[tuple[int | None, str], float] = {}
    for layer, group, norm in rows:
        squares[layer, group] = squares.get((layer, group), 0.0) + norm * norm
    order = sorted(squares, key=lambda key: -1 if key[0] is None else key[0])
    return [
        ParamGroupGrad(layer=k[0], group=k[1], grad_norm=float32_digits(math.sqrt(squares[k])))
        for k in order
    ]


def watch_record(
    result: StatsResult,
    params: list[ParamGroupGrad],
    *,
    step: int,
    loss: float,
    lr: float,
    mode: str,
) -> WatchRecord:
    """The log record of one recorded step."""
    return WatchRecord(
        step=step,
        loss=loss,
        lr=lr,
        norms=norm_records(result.norms),
        params=params,
        mode=mode,
        tokens=result.input.num_tokens,
    )


# From a log back to series -------------------------------------------------------------------


def summary_value(norm: NormRecord, summary: Summary) -> float:
    """A summary of a record's norm: the largest |x|, or the median over the step's tokens."""
    if summary.peak:
        return norm.absmax
    found = norm.quantiles.get(summary.key)
    return found.q50 if found is not None else math.nan


@dataclass
class NormSeries:
    """One norm over the log's records, in file order (NaN where a record lacks it)."""

    name: str
    layer: int | None
    role: str
    values: dict[str, np.ndarray]  # Summary.key -> per record (medians over tokens; max |x|)
    absmax_dim: np.ndarray  # int, -1 where unknown


MAX_NORM_NAMES = 8192  # distinct norms of a log: a model of 2,000 layers with 4 norms each
MAX_SERIES_CELLS = 1 << 22  # norms x records (25 norms over 167k): 7 arrays are 235 MB


def check_series_size(log: WatchLog) -> None:
    """Refuse a log whose series would not fit: too many norm names, or norms x records."""
    names = len({norm.name for record in log.records for norm in record.norms})
    if names > MAX_NORM_NAMES:
        raise LninspectError(
            f"log '{log.path}' names {names:,} different norms, more than the "
            f"{MAX_NORM_NAMES:,} lninspect reads back from one log"
        )
    cells = names * len(log.records)
    if cells > MAX_SERIES_CELLS:
        raise LninspectError(
            f"log '{log.path}' has {names:,} norms over {len(log.records):,} records: "
            f"{cells:,} values per statistic, more than the {MAX_SERIES_CELLS:,} lninspect "
            "holds; record less often (watch(every=...)) or fewer norms"
        )


def norm_series(log: WatchLog) -> list[NormSeries]:
    """Every norm of the log in model order (by layer, then role), as series over the records
    (file order: a log whose steps restart keeps both runs, one after the other).

    One pass over the records; a log past MAX_NORM_NAMES or MAX_SERIES_CELLS is refused.
    """
    check_series_size(log)
    found: dict[str, tuple[NormRecord, list[int], list[list[float]], list[int]]] = {}
    for i, record in enumerate(log.records):
        for norm in record.norms:
            first, where, rows, dims = found.setdefault(norm.name, (norm, [], [], []))
            if where and where[-1] == i:  # a name twice in one record: the first counts
                continue
            where.append(i)
            rows.append([summary_value(norm, summary) for summary in SUMMARIES])
            dims.append(norm.absmax_dim)
    series = [
        _series(first, where, rows, dims, len(log.records))
        for first, where, rows, dims in found.values()
    ]
    return sorted(series, key=_depth_order(series))


def _series(
    first: NormRecord, where: list[int], rows: list[list[float]], dims: list[int], records: int
) -> NormSeries:
    """A norm's series: its values at the records `where`, NaN (dim -1) at the others."""
    grid = np.full((len(SUMMARIES), records), np.nan)
    grid[:, where] = np.array(rows, dtype=np.float64).T  # (summaries, records it is in)
    absmax_dim = np.full(records, -1, dtype=np.int64)
    absmax_dim[where] = dims
    values = {summary.key: grid[k] for k, summary in enumerate(SUMMARIES)}
    return NormSeries(first.name, first.layer, first.role, values, absmax_dim)


def _depth_order(series: list[NormSeries]) -> Callable[[NormSeries], tuple[float, int]]:
    """Sort key: embed norms first, then by layer and block role, final norms last."""
    roles = ordered_roles({s.role for s in series})
    top = max((s.layer for s in series if s.layer is not None), default=0)

    def key(s: NormSeries) -> tuple[float, int]:
        where = -1.0 if s.role == "embed" else top + 1.0
        return (float(s.layer) if s.layer is not None else where, roles.index(s.role))

    return key


def steps_of(log: WatchLog) -> np.ndarray:
    return np.array(log.steps, dtype=np.int64)


STEP_AXIS = "optimizer step"
RECORD_AXIS = "record, in file order (the steps do not increase)"


def record_axis(log: WatchLog) -> tuple[np.ndarray, str]:
    """The x of each record in the figures and its label: the step while the steps increase;
    else (a restarted or resumed run's log) the record's number, 1, 2, ..., in file order."""
    steps = steps_of(log)
    if (np.diff(steps) > 0).all():
        return steps, STEP_AXIS
    return np.arange(1, steps.size + 1), RECORD_AXIS


def losses(log: WatchLog) -> np.ndarray:
    return np.array([r.loss for r in log.records], dtype=np.float64)


@dataclass
class Jump:
    """A statistic of a norm that changed suddenly between two recorded steps (see above)."""

    step: int
    name: str
    statistic: str  # a Summary.key
    before: float  # its value at the recorded step before
    after: float  # its value at `step`
    record: int = -1  # the index of the record of `step` in the log (file order)

    @property
    def factor(self) -> float:
        return self.after / self.before


def jumps(log: WatchLog, factor: float = JUMP_FACTOR, window: int = JUMP_WINDOW) -> list[Jump]:
    """Every jump of every norm's statistics, largest change first."""
    steps = log.steps
    found = []
    for s in norm_series(log):
        for key in (summary.key for summary in SUMMARIES if not summary.signed):
            values = s.values[key]
            for i in _jump_indices(values, factor, window):
                found.append(Jump(steps[i + 1], s.name, key, values[i], values[i + 1], i + 1))
    return sorted(found, key=lambda j: -abs(math.log(j.factor)))


def _jump_indices(values: np.ndarray, factor: float, window: int) -> list[int]:
    """The i where values[i] -> values[i + 1] is a jump: |log| of the change at least
    log(factor) and JUMP_CONTRAST times the median of the finite ones of the `window`
    changes before it (at least one)."""
    if values.size < 3:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        changes = np.abs(np.log(values[1:] / values[:-1]))  # NaN where not both > 0
    finite = np.isfinite(changes)
    if finite.sum() < 2:  # a jump is a finite change after another
        return []
    changes = np.where(finite, changes, np.nan)
    padded = np.concatenate([np.full(window, np.nan), changes[:-1]])
    recent = np.lib.stride_tricks.sliding_window_view(padded, window)  # (changes, window)
    with np.errstate(invalid="ignore"):
        median = _finite_median(recent)
        hit = (changes >= math.log(factor)) & (changes >= JUMP_CONTRAST * median)
    hit[0] = False  # the first change has none before it
    return [int(i) for i in np.flatnonzero(hit)]


def _finite_median(rows: np.ndarray) -> np.ndarray:
    """The median of the non-NaN values of each row (NaN for a row of none), as np.median."""
    ordered = np.sort(rows, axis=1)  # NaN last
    count = (~np.isnan(rows)).sum(axis=1)
    at = np.arange(rows.shape[0])
    low = ordered[at, np.maximum((count - 1) // 2, 0)]
    high = ordered[at, count // 2 - (count == 0)]
    return np.where(count > 0, (low + high) / 2, np.nan)


@dataclass
class SpikeHistory:
    """The largest |x| of one norm over training: when, where, and since when in that dim."""

    name: str
    value: float
    step: int  # the recorded step of the largest |x|
    dim: int  # its hidden dimension
    first: int  # the first recorded step whose largest |x| was in that dimension


def spike_history(log: WatchLog, series: list[NormSeries] | None = None) -> list[SpikeHistory]:
    """Per norm (model order): the largest |x| over the log, its step and dimension
    (`series`: the log's norm_series, when the caller holds them already)."""
    steps = log.steps
    rows = []
    for s in norm_series(log) if series is None else series:
        absmax = s.values["absmax"]
        index = largest_finite(absmax)
        if index is None:
            continue
        (i,) = index
        dim = int(s.absmax_dim[i])
        first = steps[int(np.argmax(s.absmax_dim == dim))]
        rows.append(SpikeHistory(s.name, float(absmax[i]), steps[i], dim, first))
    return rows


def first_last(values: np.ndarray) -> tuple[float, float]:
    """The first and the last finite value (NaN, NaN when none)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan, math.nan
    return float(finite[0]), float(finite[-1])


def stacked(series: list[NormSeries], key: str) -> np.ndarray:
    """(norms, steps) array of one statistic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([s.values[key] for s in series]) if series else np.zeros((0, 0))
