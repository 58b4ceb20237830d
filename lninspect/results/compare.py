"""The comparison of several models or checkpoints on one text: `lninspect.compare/1`.

Rows match one norm of every model: by module name when every model has the same norms,
otherwise by role and relative depth (layer / (layers - 1)): for each norm of the first
model, the norm of the same role nearest in relative depth in each other model. `mode` says
what the numbers can be compared on: "tokens" when every model saw the same token ids (the
same tokenizer: values per token, token by token), "layers" otherwise (each model's medians
over its own tokens). No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lninspect.display import html_view
from lninspect.results.codec import Document, meta
from lninspect.statistics import FORMER_SUMMARIES, INPUT_DENOMINATOR, schemas

# compare/2 renamed a row's spike_z (the largest |z|, not the z rule) max_abs_z; from there,
# each generation of statistics adds one (lninspect.statistics.schemas).
COMPARE_SCHEMAS = ("lninspect.compare/1", *schemas("compare"))
COMPARE_SCHEMA = COMPARE_SCHEMAS[-1]
# the per-token denominator of one token, a Difference's statistic beside the summaries
TOKEN_DENOMINATOR = f"token_{INPUT_DENOMINATOR}"
# a Difference's statistic as older documents name it -> its name (statistics.Summary.was)
FORMER_STATISTICS = FORMER_SUMMARIES | {
    f"token_{k}": f"token_{v}" for k, v in FORMER_SUMMARIES.items()
}


@dataclass
class ComparedModel:
    """One of the models compared, as its spec named it (`id@revision` for a hub revision)."""

    spec: str
    name: str
    revision: str | None
    source: str
    cls: str = field(metadata=meta(json="class"))
    num_layers: int | None
    num_tokens: int
    loss: float  # mean next-token cross-entropy of the text


@dataclass
class NormValues:
    """One model's norm in a row: medians over its tokens, its largest |x| and spike."""

    name: str
    layer: int | None
    depth: float  # layer / (layers - 1); 0 for an embedding norm, 1 for a final one
    absmax: float  # the largest |x| over tokens
    absmax_dim: int
    max_abs_z: float = field(metadata=meta(was="spike_z"))  # largest |z| of its spikes; NaN: none
    # per-token input denominator (std, or rms for RMSNorm) of sequence 0, in "tokens" mode:
    tokens: list[float] | None = field(default=None, metadata=meta(omit_none=True))
    # Summary.key -> the median over tokens (input_denominator: std, rms for RMSNorm;
    # grad_scale: |dL/dx| / |dL/dy|; ...), as keys of the row itself; one newer than the
    # document is absent, one renamed since is read under its former key:
    medians: dict[str, float] = field(
        default_factory=dict, metadata=meta(spread=True, was=FORMER_SUMMARIES)
    )

    def value(self, key: str) -> float:
        """A summary (lninspect.statistics SUMMARIES) of this norm; NaN when not held."""
        return self.absmax if key == "absmax" else self.medians.get(key, math.nan)


@dataclass
class MatchedRow:
    """The norms matched across the models (one per model, in the order of `models`)."""

    role: str
    depth: float  # the first model's relative depth
    models: list[NormValues]
    placement: str = "pre"  # the first model's norm's (documents before it: pre)
    reads: str = "residual"  # what it reads (lninspect.roles.STREAMS)


@dataclass
class Difference:
    """A statistic of a matched row where a model differs from the first one."""

    statistic: str  # a Summary.key (input_denominator, ...), or TOKEN_DENOMINATOR (one token)
    row: int  # index into `rows`
    model: int  # index into `models` (never 0, the reference)
    reference: float  # the first model's value
    value: float
    ratio: float  # value / reference
    token: int | None = field(default=None, metadata=meta(omit_none=True))  # TOKEN_DENOMINATOR


@dataclass
class CompareResult(Document):
    """Several models on one text, norm by matched norm, with their largest differences."""

    SCHEMAS: ClassVar[tuple[str, ...]] = COMPARE_SCHEMAS

    mode: str  # "tokens" (same token ids: per token) or "layers" (per-layer aggregates)
    matching: str  # "names" or "relative depth"
    models: list[ComparedModel]
    rows: list[MatchedRow]
    differences: list[Difference]  # largest |log ratio| first
    tokens: list[str] = field(default_factory=list)  # the token pieces ("tokens" mode)
    notes: list[str] = field(default_factory=list)
    schema: str = COMPARE_SCHEMA

    def _repr_html_(self) -> str | None:
        """A notebook's view: std per matched norm and model, with a figure."""
        return html_view(self)

    @classmethod
    def upgrade(cls, doc: dict[str, Any]) -> dict[str, Any]:
        """Differences of an older document under the statistics' current names (the rows'
        medians are renamed by the codec: `was`)."""
        found = doc.get("differences") if isinstance(doc, dict) else None
        if not isinstance(found, list):
            return doc
        return {**doc, "differences": [_renamed(d) for d in found]}


def _renamed(difference: Any) -> Any:
    name = difference.get("statistic") if isinstance(difference, dict) else None
    if not isinstance(name, str) or name not in FORMER_STATISTICS:
        return difference
    return {**difference, "statistic": FORMER_STATISTICS[name]}
