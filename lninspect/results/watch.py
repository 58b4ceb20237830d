"""The log of a watched training run: one JSON document per line, `lninspect.watch/4`.

    {"schema": "lninspect.watch/4", "step": 40, "loss": 3.21, "lr": 0.0006, "mode": "train",
     "tokens": 2048, "norms": [{"name", "layer", "role", "absmax", "absmax_dim",
     "input_denominator": {q05, q25, q50, q75, q95, max}, "output_std": {...}, "grad_scale":
     {...}}],
     "params": [{"layer", "group", "grad_norm"}]}

A run of several processes (torch.distributed) adds "world_size" and "grads" (what the
parameter gradient norms are of: "local", "averaged" by DDP, "full" from FSDP2's shards) to
the record, and "absmax_rank", "absmax_token", "nonfinite", "grad_nonfinite" to each norm;
its quantiles come from lninspect.monitor.bins (docs/training.md).

A norm's quantile blocks are the summaries that lninspect.statistics declares (SUMMARIES);
the schema's version says which it can hold (`Summary.since`); one renamed since is read
under its former key (`Summary.was`: watch/3 and older wrote `input_std`).

A line is appended, flushed and synced per recorded step (lninspect.monitor.sinks), so a
crash loses at most the line being written. The reader below therefore accepts a log that
is still being written: a last line without its newline is left out (and said), a damaged
line elsewhere is an error. No torch.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

from lninspect.display import html_view
from lninspect.errors import LninspectError
from lninspect.files import open_input, os_reason
from lninspect.results.codec import Document, meta, shown_number
from lninspect.scale import ScaleSpread
from lninspect.statistics import FORMER_SUMMARIES, SUMMARIES, schemas

WATCH_SCHEMAS = schemas("watch")  # oldest first
WATCH_SCHEMA = WATCH_SCHEMAS[-1]
LOG_NAME = "lninspect-watch.jsonl"  # the log's file name inside watch(log_dir=...)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_ranks = meta(omit_none=True)  # keys of a multi-process record, absent from a single process's
MODES = ("train", "probe")
MAX_LINE_BYTES = 16 << 20  # a record of ~30k norms; a longer line is no log of ours
MAX_LOG_BYTES = 512 << 20  # read at once (~100k steps of a 12-layer model)
MAX_STEP = 1 << 53  # steps are exact in float64 (figures) below this
MAX_LAYER = 1 << 16  # a layer number of a log (the figures colour each layer in between)


@dataclass
class Quantiles:
    """Quantiles over the tokens of a recorded step, and the maximum (NaN: no finite value)."""

    q05: float
    q25: float
    q50: float
    q75: float
    q95: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Quantiles:
        """From [q05, q25, q50, q75, q95, max]."""
        return cls(*values)


@dataclass
class NormRecord:
    """One norm at one recorded step: its per-token statistics reduced over the step's tokens."""

    name: str
    layer: int | None
    role: str
    absmax: float  # the largest |x| over the step's tokens
    absmax_dim: int  # the hidden dimension where it sits (-1: none finite)
    # Summary.key -> its quantiles over the step's tokens (input_denominator, grad_scale, ...),
    # as keys of the record itself; a summary newer than the log is absent, one renamed since
    # is read under its former key:
    quantiles: dict[str, Quantiles] = field(
        default_factory=dict, metadata=meta(spread=True, was=FORMER_SUMMARIES)
    )
    # how far its s is from a constant over the step's tokens (lninspect.scale; watch/3 on)
    scale: ScaleSpread | None = field(default=None, metadata=meta(omit_none=True))
    # Written only by a run of several processes (lninspect.monitor.ranks):
    absmax_rank: int | None = field(default=None, metadata=_ranks)  # the rank of absmax
    absmax_token: int | None = field(default=None, metadata=_ranks)  # its token on that rank
    nonfinite: int | None = field(default=None, metadata=_ranks)  # non-finite entries of x
    grad_nonfinite: int | None = field(default=None, metadata=_ranks)  # of dL/dy


@dataclass
class ParamGroupGrad:
    """L2 norm of the gradient of one parameter group in one layer (None: outside the blocks)."""

    layer: int | None
    group: str  # embed, attn_in, attn_out, mlp_in, mlp_out, norm_weight, norm_bias, head, other
    grad_norm: float


QUANTILE_FIELDS = tuple(s.key for s in SUMMARIES if not s.peak)  # NormRecord.quantiles' keys


@dataclass
class WatchRecord(Document):
    """One recorded step: `step` optimizer updates had been applied to the weights it shows."""

    SCHEMAS: ClassVar[tuple[str, ...]] = WATCH_SCHEMAS

    step: int
    loss: float  # the step's training loss (train mode) or the probe's loss; NaN: unknown
    lr: float  # the learning rate of the optimizer's first parameter group; NaN: unknown
    norms: list[NormRecord]
    params: list[ParamGroupGrad]
    mode: str = "train"  # "train": the step's own batch; "probe": the fixed text of watch(text=)
    tokens: int = 0  # tokens the statistics are over (over all ranks)
    world_size: int | None = field(default=None, metadata=_ranks)  # processes (None: one)
    grads: str | None = field(default=None, metadata=_ranks)  # local, averaged or full
    schema: str = WATCH_SCHEMA


@dataclass
class WatchLog:
    """The records of a log, in file order, and what the reader had to leave out."""

    path: str
    records: list[WatchRecord]
    partial_line: bool = False  # the last line had no newline yet (a run still writing)
    notes: list[str] = field(default_factory=list)  # what the reader noticed (steps out of order)

    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.records]

    def _repr_html_(self) -> str | None:
        """A notebook's view: each norm's std first → last, and the loss curve."""
        return html_view(self)


def log_path(target: Path) -> Path:
    """The log file itself, given either it or the log_dir that holds it."""
    return target / LOG_NAME if target.is_dir() else target


def read_log(target: Path) -> WatchLog:
    """Read a watch log (or the one inside a log_dir); a partial last line is left out.

    Read line by line, at most MAX_LINE_BYTES a line and MAX_LOG_BYTES in all (a device or
    a damaged file is refused, never read whole); every record is checked field by field.
    """
    path = log_path(target)
    records: list[WatchRecord] = []
    partial = False
    with _opened(target, path) as handle, _readable(path):
        total = 0
        for number in itertools.count(1):
            line = handle.readline(MAX_LINE_BYTES + 1)
            total += len(line)
            if len(line) > MAX_LINE_BYTES:
                raise LninspectError(
                    f"'{path}' line {number} is longer than {MAX_LINE_BYTES >> 20} MiB: not a "
                    f"{WATCH_SCHEMA} log"
                )
            if total > MAX_LOG_BYTES:
                raise LninspectError(
                    f"log '{path}' is larger than {MAX_LOG_BYTES >> 20} MiB, more than lninspect "
                    "reads at once; record less often (watch(every=...))"
                )
            if not line.endswith(b"\n"):  # the end, or a line still being written
                partial = line.strip() != b""
                break
            record = _parse(path, number, line)
            if record is not None:
                records.append(record)
    if not records and not partial:
        raise LninspectError(f"log '{path}' holds no recorded step yet")
    return WatchLog(path=str(path), records=records, partial_line=partial, notes=_order(records))


@contextmanager
def _opened(target: Path, path: Path) -> Iterator[BinaryIO]:
    """The log opened for reading, or one sentence that says why it cannot be."""
    try:
        handle = open_input(path)
    except FileNotFoundError:
        where = f"folder '{target}' holds no {LOG_NAME}" if target.is_dir() else None
        raise LninspectError(where or f"log '{target}' does not exist") from None
    except OSError as exc:
        raise LninspectError(f"cannot read log '{path}': {os_reason(exc)}") from exc
    with handle:
        yield handle


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise LninspectError(f"cannot read log '{path}': {os_reason(exc)}") from exc


def _order(records: list[WatchRecord]) -> list[str]:
    """A note when the steps do not increase: two runs in one log, or a resumed run."""
    for number, (before, after) in enumerate(itertools.pairwise(records), 2):
        if after.step <= before.step:
            return [
                f"the steps do not increase (record {number}: step {after.step} after "
                f"{before.step}): two runs in one log, or a run resumed from an earlier "
                "checkpoint? The series follow the file's order"
            ]
    return []


def _parse(path: Path, number: int, line: bytes) -> WatchRecord | None:
    if not line.strip():
        return None
    try:
        doc = json.loads(line)
        record = WatchRecord.from_json(doc)
        _check_record(record)
        return record
    except RecursionError:
        reason = "nested too deeply"
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise LninspectError(f"'{path}' line {number} is not a {WATCH_SCHEMA} record ({reason})")


def _check_record(record: WatchRecord) -> None:
    """What the codec's types do not say: the ranges of the step, layers, dims; the mode."""
    _in_range("step", record.step, 0, MAX_STEP - 1)
    if record.mode not in MODES:
        raise ValueError(f"mode {record.mode!r} is not one of {', '.join(MODES)}")
    _in_range("tokens", record.tokens, 0, None)
    for i, norm in enumerate(record.norms):
        _in_range(f"norms[{i}].layer", norm.layer, 0, MAX_LAYER - 1)
        _in_range(f"norms[{i}].absmax_dim", norm.absmax_dim, -1, None)
    for i, group in enumerate(record.params):
        _in_range(f"params[{i}].layer", group.layer, 0, MAX_LAYER - 1)


def _in_range(what: str, value: int | None, low: int, high: int | None) -> None:
    """A ValueError naming the field and its value when `value` (None: absent) is outside."""
    if value is not None and not (low <= value and (high is None or value <= high)):
        shown = shown_number(value)
        raise ValueError(f"{what}: {shown} is outside {low}..{'' if high is None else high}")
