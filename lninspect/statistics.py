"""The one declaration of every per-token statistic: what it is, how it is reduced, where it goes.

An entry holds a statistic's record key, the result field and JSON key it is written under,
its unit and definition, its per-token reduction (for the forward statistics), and where
else it appears: per position over a corpus (`aggregated`), as a per-norm summary in the
watch log, `run` and `compare` (`summary`), as a column of the `stats` table (`column`).
The eager and the compiled reductions both run `reduce` (lninspect.hooks.reduce); the
result blocks, the JSON codec, the corpus aggregate, the watch log, the comparison, the
tables and docs/statistics.md read the entries (tests/test_layout.py keeps them in step).
A new statistic is one entry here: docs/architecture.md, "Add a statistic".

No torch, no numpy at import (everything may read this), and nothing from hooks/, render/
or cli/: a reduction takes the shared per-token intermediates (`Intermediates`, which
lninspect.hooks.reduce.TokenMoments computes) and calls tensor methods only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Tensor


class Intermediates(Protocol):
    """What a reduction reads: the per-token intermediates of one norm call, shared by every
    statistic (lninspect.hooks.reduce.TokenMoments). x and y are float32 (..., d); the rest
    (...), of x unless `out_`: the moments (std with eps), max |x| and its dimension."""

    x: Tensor
    y: Tensor
    mean: Tensor
    std: Tensor
    kurtosis: Tensor
    out_mean: Tensor
    out_std: Tensor
    out_kurtosis: Tensor
    absmax: Tensor
    absmax_dim: Tensor  # int64

    @property
    def nonfinite(self) -> Tensor:
        """NaN and Inf entries of x per token (int32), counted when read."""
        ...


Reduction = Callable[[Intermediates], "Tensor"]


@dataclass(frozen=True)
class Statistic:
    """One per-token statistic of a norm."""

    key: str  # the reduction's record key; the corpus aggregate's key in `positions`
    side: str  # the result block it sits in: "input", "output" or "grad"
    field: str  # its field there (InputStats, OutputStats, GradStats) and JSON key
    source: str  # which hook computes it, from what
    unit: str
    definition: str
    dtype: str = "float32"  # of its arrays (float32 statistics, integer indices and counts)
    aggregated: bool = True  # per-position moments over a corpus (`stats --file`)
    optional: bool = False  # None (absent from the JSON) when not recorded or not yet known
    reduce: Reduction | None = None  # (..., d) -> (...): the forward hook's reduction
    label: str = ""  # short, for table columns and figure axes (the key when empty)
    summary: str | None = None  # its key as a per-norm summary (watch log, run, compare)
    column: bool = False  # a column of `stats --wide`: the median over tokens
    signed: bool = False  # may be <= 0: linear axes, and no ratios (differences, jumps)
    since: int = 1  # the generation that added it: older documents do not hold it

    @property
    def may_be_absent(self) -> bool:
        """None when not recorded, or in a document older than the statistic."""
        return self.optional or self.since > 1

    @property
    def json(self) -> str:
        """Its path in a norm's JSON block: `input.std`."""
        return f"{self.side}.{self.field}"


# fmt: off
STATISTICS = (
    Statistic("mean", "input", "mean", "forward hook, x", "activation",
              "mean_j x_j: the centre a LayerNorm subtracts", reduce=lambda t: t.mean),
    Statistic("std", "input", "std", "forward hook, x", "activation",
              "sqrt(var_j x_j + eps), variance biased (over d): a LayerNorm's denominator",
              reduce=lambda t: t.std),
    Statistic("rms", "input", "rms", "forward hook, x", "activation",
              "sqrt(mean_j x_j^2 + eps): an RMSNorm's denominator",
              reduce=lambda t: t.std.hypot(t.mean)),  # sqrt(var + eps + mean^2)
    Statistic("absmax", "input", "absmax", "forward hook, x", "activation",
              "max_j abs(x_j): the token's largest activation", reduce=lambda t: t.absmax),
    Statistic("absmax_dim", "input", "absmax_dim", "forward hook, x", "index",
              "argmax_j abs(x_j): the hidden dimension where it sits",
              dtype="int64", aggregated=False, reduce=lambda t: t.absmax_dim),
    Statistic("kurtosis", "input", "kurtosis", "forward hook, x", "ratio",
              "E_j[(x_j - mean)^4] / var^2 - 3, biased, no eps: excess kurtosis, 0 for a "
              "Gaussian token, large where a few dimensions carry it; NaN when var = 0",
              reduce=lambda t: t.kurtosis, label="kurt",
              summary="kurtosis", column=True, signed=True, since=2),
    Statistic("nonfinite", "input", "nonfinite", "forward hook, x", "count",
              "NaN and Inf entries of x; a token with any has NaN (or Inf) statistics",
              dtype="int32", aggregated=False, optional=True,
              reduce=lambda t: t.nonfinite),
    Statistic("out_mean", "output", "mean", "forward hook, y", "activation",
              "mean_j y_j: what the norm hands on", reduce=lambda t: t.out_mean),
    Statistic("out_std", "output", "std", "forward hook, y", "activation",
              "sqrt(var_j y_j), biased, no eps: the output's spread",
              reduce=lambda t: t.out_std, label="out std", summary="output_std"),
    Statistic("out_kurtosis", "output", "kurtosis", "forward hook, y", "ratio",
              "the same excess kurtosis of y; NaN when var = 0",
              reduce=lambda t: t.out_kurtosis, label="out kurt",
              summary="output_kurtosis", column=True, signed=True, since=2),
    Statistic("grad_output", "grad", "output_norm", "tensor hook on y", "gradient",
              "norm of dL/dy: the gradient arriving at the norm's output", aggregated=False),
    Statistic("grad_input", "grad", "input_norm", "tensor hook on the norm's alias of x",
              "gradient", "norm of dL/dx through the norm alone", aggregated=False),
    Statistic("grad_residual", "grad", "residual_norm", "tensor hook on x", "gradient",
              "norm of dL/dx in total: every use of x (the residual stream, pre-LN)",
              aggregated=False),
    Statistic("grad_output_nonfinite", "grad", "output_nonfinite", "tensor hook on y", "count",
              "NaN and Inf entries of dL/dy", dtype="int32", aggregated=False, optional=True),
)
# fmt: on
BY_KEY = {s.key: s for s in STATISTICS}
FORWARD = tuple(s for s in STATISTICS if s.reduce is not None)  # what the forward hook records


# What the newest documents can hold. Generation 3 adds no per-token statistic: each norm's
# `scale` (lninspect.scale), and in stats documents its `map` and `freeze` (docs/metrics.md).
# Generation 4 adds none either: the summary `input_std` is named `input_denominator` (it is
# the rms of an RMSNorm), and a corpus run's norms may hold a `map` (--map over a corpus), so
# that a reader of generation 3 meets no key it does not know.
NORM_MAP_GENERATION = 3
DENOMINATOR_GENERATION = 4
GENERATION = max(NORM_MAP_GENERATION, DENOMINATOR_GENERATION, *(s.since for s in STATISTICS))


# The documents that hold statistics, and their version that held generation 1: each
# generation since adds one, so a version says which statistics it can hold (`since`).
FIRST_VERSIONS = {"stats": 2, "grads": 2, "stats-aggregate": 2, "watch": 1, "compare": 2}


def schemas(name: str) -> tuple[str, ...]:
    """The versions of a document that holds statistics, oldest first, the current last."""
    first = FIRST_VERSIONS[name]
    return tuple(f"lninspect.{name}/{first + g - 1}" for g in range(1, GENERATION + 1))


def generation_of(schema: str) -> int:
    """The generation of statistics a document of `schema` holds (1 for versions before)."""
    name, _, version = schema.removeprefix("lninspect.").partition("/")
    return max(1, int(version) - FIRST_VERSIONS[name] + 1)


@dataclass(frozen=True)
class Summary:
    """A number per norm over the tokens of a watched step (`watch`, `run`) or of a text
    (`compare`): the quantiles of a per-token array (the median shown), or for `peak` the
    largest finite value with its hidden dimension."""

    key: str  # in the watch log's norm records, run's series, compare's rows and differences
    label: str  # short, for tables
    title: str  # for figure axes
    of: str  # the per-token array: a Statistic key, "denominator" or "grad_scale"
    peak: bool = False
    signed: bool = False  # may be <= 0: linear axes, no ratios
    since: int = 1
    was: str = ""  # its key in documents before DENOMINATOR_GENERATION, when it differs


INPUT_DENOMINATOR = "input_denominator"  # what the norm divides by: std, or rms (RMSNorm)
SUMMARIES = (
    Summary(INPUT_DENOMINATOR, "std/rms", "median input std (rms for RMSNorm)", "denominator",
            was="input_std"),
    Summary("grad_scale", "scale", "median |dL/dx| / |dL/dy|", "grad_scale"),
    Summary("absmax", "max|x|", "largest |x|", "absmax", peak=True),
    *(
        Summary(s.summary, s.label or s.key, f"median {s.summary.replace('_', ' ')}", s.key,
                signed=s.signed, since=s.since)
        for s in STATISTICS
        if s.summary
    ),
)  # fmt: skip
SUMMARY = {s.key: s for s in SUMMARIES}
FORMER_SUMMARIES = {s.was: s.key for s in SUMMARIES if s.was}  # an older document's key -> key


def on_side(side: str) -> tuple[Statistic, ...]:
    """The statistics of one result block, in field order."""
    return tuple(s for s in STATISTICS if s.side == side)


AGGREGATED_KEYS = tuple(s.key for s in STATISTICS if s.aggregated)


def denominator_key(kind: str) -> str:
    """What a norm divides by: `rms` for an RMSNorm, `std` for a LayerNorm."""
    return "rms" if kind == "rmsnorm" else "std"


def markdown_table() -> str:
    """The table of statistics as docs/statistics.md shows it."""
    rows = ["| JSON key | definition | unit | computed by | since |", "|---|---|---|---|---|"]
    rows += [
        f"| `{s.json}` | {s.definition} | {s.unit} | {s.source} | {s.since} |" for s in STATISTICS
    ]
    return "\n".join(rows)


def summaries_table() -> str:
    """The per-norm summaries of the watch log, `run` and `compare`, for the docs."""
    rows = [
        "| key | label | of the per-token | reduced over tokens to | since |",
        "|---|---|---|---|---|",
    ]
    for s in SUMMARIES:
        how = (
            "the largest finite value (`absmax_dim`: its dimension)"
            if s.peak
            else ("quantiles `q05` .. `q95`, `max` (watch); the median (`run`, `compare`)")
        )
        sign = "; may be <= 0: linear axes, no ratios or jumps" if s.signed else ""
        label = s.label.replace("|", "\\|")  # a pipe would end the cell
        was = f" (`{s.was}` before generation {DENOMINATOR_GENERATION})" if s.was else ""
        rows.append(f"| `{s.key}`{was} | {label} | `{s.of}` | {how}{sign} | {s.since} |")
    return "\n".join(rows)


def aggregated_list() -> str:
    """The statistics a corpus run aggregates per position, for docs/corpus.md."""
    return ", ".join(f"`{key}`" for key in AGGREGATED_KEYS)


def schemas_table() -> str:
    """Which version of each document holds which generation of statistics."""
    rows = ["| generation | " + " | ".join(FIRST_VERSIONS) + " |"]
    rows.append("|---|" + "---|" * len(FIRST_VERSIONS))
    for g in range(1, GENERATION + 1):
        cells = [f"`{schemas(name)[g - 1].removeprefix('lninspect.')}`" for name in FIRST_VERSIONS]
        rows.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# The docs' generated blocks: name -> its text (lninspect.docs_tables writes them).
GENERATED = {
    "statistics": markdown_table,
    "summaries": summaries_table,
    "aggregated": aggregated_list,
    "schemas": schemas_table,
}
