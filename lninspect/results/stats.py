"""Result objects of one run: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers, so that rendering and JSON work without them.
Per-token arrays have the shape of the norm's input without its hidden axis, normally
(sequences, tokens); a per-head norm keeps its head axis. The statistics themselves are
defined in lninspect.statistics; the JSON codec is lninspect.results.codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lninspect.results.codec import from_document, meta, to_document
from lninspect.statistics import BY_KEY, denominator_key, on_side

STATS_SCHEMA = "lninspect.stats/1"
GRADS_SCHEMA = "lninspect.grads/1"
NORMS_SCHEMA = "lninspect.norms/1"


def _statistic(key: str) -> Any:
    """Codec metadata of one statistic's field: its dtype; left out of the JSON when optional."""
    s = BY_KEY[key]
    return meta(dtype=s.dtype, omit_none=s.optional)


def from_record(cls: type[Any], side: str, record: dict[str, np.ndarray]) -> Any:
    """InputStats, OutputStats or GradStats from a gathered record keyed by Statistic.key."""
    return cls(**{s.field: record[s.key] for s in on_side(side) if s.key in record})


@dataclass
class ModelInfo:
    """What was inspected: `source` is one of hub, local, random, bundled, module."""

    cls: str = field(metadata=meta(json="class"))  # the model's class name
    name: str
    source: str
    dtype: str
    device: str
    num_layers: int | None = None
    hidden_size: int | None = None


@dataclass
class InputInfo:
    """The token sequences the statistics are about."""

    num_sequences: int
    num_tokens: int
    tokens: list[list[str]] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)


@dataclass
class InputStats:
    """Per-token statistics of a norm's input x over its hidden axis."""

    mean: np.ndarray = field(metadata=_statistic("mean"))
    std: np.ndarray = field(metadata=_statistic("std"))  # the LayerNorm denominator
    rms: np.ndarray = field(metadata=_statistic("rms"))  # the RMSNorm denominator
    absmax: np.ndarray = field(metadata=_statistic("absmax"))
    absmax_dim: np.ndarray = field(metadata=_statistic("absmax_dim"))
    nonfinite: np.ndarray | None = field(default=None, metadata=_statistic("nonfinite"))


@dataclass
class OutputStats:
    """Per-token mean and (biased, eps-free) std of a norm's output y."""

    mean: np.ndarray = field(metadata=_statistic("out_mean"))
    std: np.ndarray = field(metadata=_statistic("out_std"))


@dataclass
class GradStats:
    """Per-token gradient norms on both sides of a norm (over its hidden axis)."""

    output_norm: np.ndarray = field(metadata=_statistic("grad_output"))
    input_norm: np.ndarray = field(metadata=_statistic("grad_input"))
    residual_norm: np.ndarray = field(metadata=_statistic("grad_residual"))
    output_nonfinite: np.ndarray | None = field(
        default=None, metadata=_statistic("grad_output_nonfinite")
    )

    @property
    def scale(self) -> np.ndarray:
        """How much the norm scales the gradient: |dL/dx through it| / |dL/dy|."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.input_norm / self.output_norm


@dataclass
class WeightSummary:
    """Summary of the effective affine weight a norm multiplies by."""

    mean: float
    std: float
    min: float
    max: float
    negative: int


@dataclass
class Spike:
    """One large activation: |z| >= spike_z, or massive (Sun et al. 2024)."""

    sequence: int
    token: int
    dim: int
    value: float  # x at this dimension
    z: float  # (x - mean) / std, or x / rms for RMSNorm
    out_value: float  # the norm's output y at this dimension
    rank_in: int  # 1 = the token's largest |x - centre|
    rank_out: int  # 1 = the token's largest |y - bias|
    massive: bool  # |x| > 100 and > 1000 x the token's median |x|


@dataclass
class OrderStats:
    """Per-token measures of whether the norm keeps the order of a token's activations."""

    within_token_spearman: np.ndarray  # Spearman of x vs y over the hidden dims
    within_token_spearman_z: np.ndarray  # x vs z (before the affine step): 1 by construction
    topk_retention: np.ndarray  # share of the top-k |x - centre| among the top-k |y - bias|
    spike_count: np.ndarray = field(metadata=meta(dtype="int64"))  # dims with |z| >= spike_z


@dataclass
class AcrossToken:
    """Spearman across the tokens of one forward call between x[:, dim] and y[:, dim]."""

    dim: int
    rho: float
    tokens: int  # how many tokens it was computed over


@dataclass
class NormDescription:
    """A normalization module as found in the model, before anything ran through it."""

    name: str
    type: str  # the module's class name
    kind: str  # "layernorm" (centres, divides by std) or "rmsnorm" (divides by rms)
    layer: int | None
    role: str  # one of lninspect.roles.ROLES
    # pre: feeds a sub-layer, the stream goes around it; post: its output joins the stream
    placement: str = field(default="pre", kw_only=True)
    eps: float
    weight: WeightSummary | None


@dataclass
class NormStats(NormDescription):
    """Everything captured for one normalization module."""

    input: InputStats
    output: OutputStats
    calls: int = 1  # forward calls seen; more than the passes means it fired twice per pass
    # Absent from the JSON when not captured:
    grad: GradStats | None = field(default=None, metadata=meta(omit_none=True))
    spikes: list[Spike] | None = field(
        default=None, metadata=meta(omit_none=True)
    )  # largest |z| first
    order: OrderStats | None = field(default=None, metadata=meta(omit_none=True))
    across_token_spearman: list[AcrossToken] | None = field(
        default=None, metadata=meta(omit_none=True)
    )

    @property
    def denominator(self) -> np.ndarray:
        """What the module divides by: std for LayerNorm, rms for RMSNorm."""
        return np.asarray(getattr(self.input, denominator_key(self.kind)))


@dataclass
class NormsResult:
    """The normalization modules of a model: what `lninspect norms` shows."""

    model: ModelInfo
    norms: list[NormDescription]
    notes: list[str] = field(default_factory=list)
    schema: str = NORMS_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return to_document(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NormsResult:
        return from_document(cls, doc, (NORMS_SCHEMA,))


@dataclass
class StatsResult:
    """The statistics of every normalization module of one model on one input."""

    SCHEMAS: ClassVar[tuple[str, ...]] = (STATS_SCHEMA, GRADS_SCHEMA)  # what from_json reads

    model: ModelInfo
    input: InputInfo
    norms: list[NormStats]
    passes: int = 1  # forward passes of the model while capturing
    notes: list[str] = field(default_factory=list)
    spike_z: float | None = None  # the spike threshold, when spikes were captured
    top_k: int | None = None  # the k of top-k retention, when spikes were captured
    schema: str = STATS_SCHEMA

    def norm(self, name: str) -> NormStats:
        """The statistics of the module called `name`."""
        for norm in self.norms:
            if norm.name == name:
                return norm
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become nested lists, non-finite floats null."""
        return to_document(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StatsResult:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        return from_document(cls, doc, cls.SCHEMAS)


@dataclass
class ParamGrad:
    """The gradient norm of one parameter tensor (NaN when it got no gradient)."""

    name: str
    layer: int | None
    group: str  # embed, attn_in, attn_out, mlp_in, mlp_out, norm_weight, norm_bias, head, other
    grad_norm: float
    numel: int


@dataclass
class GradsResult(StatsResult):
    """StatsResult plus gradients: each norm's `grad`, the loss, every parameter's grad norm."""

    SCHEMAS: ClassVar[tuple[str, ...]] = (GRADS_SCHEMA,)

    loss: float = float("nan")
    loss_kind: str = "next-token cross-entropy, mean over predicted tokens"
    params: list[ParamGrad] = field(default_factory=list)
    schema: str = GRADS_SCHEMA

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GradsResult:
        return from_document(cls, doc, cls.SCHEMAS)
