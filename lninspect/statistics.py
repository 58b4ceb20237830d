"""The one table of per-token statistics: what each is, where it comes from, where it goes.

Every reduction in lninspect.hooks.reduce returns a record keyed by `Statistic.key`; the
capture turns a record into the result fields named here; the corpus aggregate keeps
per-position moments of the `aggregated` ones under the same keys; docs/statistics.md prints
this table (a test keeps it in step). A new statistic is one entry here, its reduction, and
the result field of that name (a test checks that the result types and this table agree).
No torch, no numpy: everything may read it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    optional: bool = False  # None (absent from the JSON) when not recorded

    @property
    def json(self) -> str:
        """Its path in a norm's JSON block: `input.std`."""
        return f"{self.side}.{self.field}"


# fmt: off
STATISTICS = (
    Statistic("mean", "input", "mean", "forward hook, x", "activation",
              "mean_j x_j: the centre a LayerNorm subtracts"),
    Statistic("std", "input", "std", "forward hook, x", "activation",
              "sqrt(var_j x_j + eps), variance biased (over d): a LayerNorm's denominator"),
    Statistic("rms", "input", "rms", "forward hook, x", "activation",
              "sqrt(mean_j x_j^2 + eps): an RMSNorm's denominator"),
    Statistic("absmax", "input", "absmax", "forward hook, x", "activation",
              "max_j abs(x_j): the token's largest activation"),
    Statistic("absmax_dim", "input", "absmax_dim", "forward hook, x", "index",
              "argmax_j abs(x_j): the hidden dimension where it sits",
              dtype="int64", aggregated=False),
    Statistic("nonfinite", "input", "nonfinite", "forward hook, x", "count",
              "NaN and Inf entries of x; a token with any has NaN (or Inf) statistics",
              dtype="int32", aggregated=False, optional=True),
    Statistic("out_mean", "output", "mean", "forward hook, y", "activation",
              "mean_j y_j: what the norm hands on"),
    Statistic("out_std", "output", "std", "forward hook, y", "activation",
              "sqrt(var_j y_j), biased, no eps: the output's spread"),
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


def on_side(side: str) -> tuple[Statistic, ...]:
    """The statistics of one result block, in field order."""
    return tuple(s for s in STATISTICS if s.side == side)


AGGREGATED_KEYS = tuple(s.key for s in STATISTICS if s.aggregated)


def denominator_key(kind: str) -> str:
    """What a norm divides by: `rms` for an RMSNorm, `std` for a LayerNorm."""
    return "rms" if kind == "rmsnorm" else "std"


def markdown_table() -> str:
    """The table as docs/statistics.md shows it."""
    rows = ["| JSON key | definition | unit | computed by |", "|---|---|---|---|"]
    rows += [f"| `{s.json}` | {s.definition} | {s.unit} | {s.source} |" for s in STATISTICS]
    return "\n".join(rows)
