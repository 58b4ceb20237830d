"""The log of a watched training run: one JSON document per line, `lninspect.watch/1`.

    {"schema": "lninspect.watch/1", "step": 40, "loss": 3.21, "lr": 0.0006, "mode": "train",
     "tokens": 2048, "norms": [{"name", "layer", "role", "input_std": {q05, q25, q50, q75,
     q95, max}, "output_std": {...}, "grad_scale": {...}, "absmax", "absmax_dim"}],
     "params": [{"layer", "group", "grad_norm"}]}

A line is appended, flushed and synced per recorded step (lninspect.monitor.sinks), so a
crash loses at most the line being written. The reader below therefore accepts a log that
is still being written: a last line without its newline is left out (and said), a damaged
line elsewhere is an error. No torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lninspect.errors import LninspectError
from lninspect.results.codec import from_document, to_document

WATCH_SCHEMA = "lninspect.watch/1"
LOG_NAME = "lninspect-watch.jsonl"  # the log's file name inside watch(log_dir=...)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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
    input_std: Quantiles  # sqrt(var + eps) of the input; rms for an RMSNorm (its denominator)
    output_std: Quantiles  # the output's std (biased, no eps)
    grad_scale: Quantiles  # |dL/dx through the norm| / |dL/dy|, per token
    absmax: float  # the largest |x| over the step's tokens
    absmax_dim: int  # the hidden dimension where it sits (-1: none finite)


@dataclass
class ParamGroupGrad:
    """L2 norm of the gradient of one parameter group in one layer (None: outside the blocks)."""

    layer: int | None
    group: str  # embed, attn_in, attn_out, mlp_in, mlp_out, norm_weight, norm_bias, head, other
    grad_norm: float


@dataclass
class WatchRecord:
    """One recorded step: `step` optimizer updates had been applied to the weights it shows."""

    step: int
    loss: float  # the step's training loss (train mode) or the probe's loss; NaN: unknown
    lr: float  # the learning rate of the optimizer's first parameter group; NaN: unknown
    norms: list[NormRecord]
    params: list[ParamGroupGrad]
    mode: str = "train"  # "train": the step's own batch; "probe": the fixed text of watch(text=)
    tokens: int = 0  # tokens the statistics are over
    schema: str = WATCH_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return to_document(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> WatchRecord:
        return from_document(cls, doc, (WATCH_SCHEMA,))


@dataclass
class WatchLog:
    """The records of a log, in file order, and what the reader had to leave out."""

    path: str
    records: list[WatchRecord]
    partial_line: bool = False  # the last line had no newline yet (a run still writing)

    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.records]

    def _repr_html_(self) -> str:
        """A notebook's view: each norm's std first → last, and the loss curve."""
        from lninspect.render.notebook import watch_html

        return watch_html(self)


def log_path(target: Path) -> Path:
    """The log file itself, given either it or the log_dir that holds it."""
    return target / LOG_NAME if target.is_dir() else target


def read_log(target: Path) -> WatchLog:
    """Read a watch log (or the one inside a log_dir); a partial last line is left out."""
    path = log_path(target)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LninspectError(f"log '{target}' does not exist") from None
    except OSError as exc:
        raise LninspectError(f"cannot read log '{path}': {exc.strerror}") from exc
    lines = data.split(b"\n")
    partial = lines[-1].strip() != b""  # bytes after the last newline: a line being written
    records = [_parse(path, number, line) for number, line in enumerate(lines[:-1], 1)]
    found = [r for r in records if r is not None]
    if not found and not partial:
        raise LninspectError(f"log '{path}' holds no recorded step yet")
    return WatchLog(path=str(path), records=found, partial_line=partial)


def _parse(path: Path, number: int, line: bytes) -> WatchRecord | None:
    if not line.strip():
        return None
    try:
        doc = json.loads(line)
        return WatchRecord.from_json(doc)
    except (ValueError, TypeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LninspectError(
            f"'{path}' line {number} is not a {WATCH_SCHEMA} record ({reason})"
        ) from exc
