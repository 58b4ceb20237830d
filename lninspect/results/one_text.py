"""Result objects of one run: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers, so that rendering and JSON work without them.
Per-token arrays have the shape of the norm's input without its hidden axis, normally
(sequences, tokens); a per-head norm keeps its head axis. The statistics themselves are
defined in lninspect.statistics and held in lninspect.results.blocks; the JSON codec is
lninspect.results.codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lninspect.display import html_view
from lninspect.results.blocks import GradStats, InputStats, OutputStats
from lninspect.results.codec import ByName, Document, meta
from lninspect.results.freeze import Freeze, NormFreeze
from lninspect.results.normmap import NormMap
from lninspect.roles import stream_of
from lninspect.scale import ScaleSpread, scale_spread
from lninspect.statistics import denominator_key, schemas

# Oldest first; a generation of statistics adds a version (lninspect.statistics.schemas).
STATS_SCHEMAS = schemas("stats")
GRADS_SCHEMAS = schemas("grads")
STATS_SCHEMA, GRADS_SCHEMA = STATS_SCHEMAS[-1], GRADS_SCHEMAS[-1]
NORMS_SCHEMA = "lninspect.norms/1"


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
    num_tokens: int  # real tokens: padding (attention mask 0) is not counted here
    tokens: list[list[str]] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    # Pad positions left out of every statistic (NaN there), when an attention mask had some:
    padding: int | None = field(default=None, metadata=meta(omit_none=True))
    # Each sequence's token positions, when some do not start at 0 (generation, KV cache):
    positions: list[list[int]] | None = field(default=None, metadata=meta(omit_none=True))


@dataclass
class WeightSummary:
    """Summary of the effective affine weight a norm multiplies by."""

    mean: float
    std: float
    min: float
    max: float
    negative: int


STAGES = ("centre", "weight", "bias")  # the stages of a norm that can reorder a token


@dataclass
class Spike:
    """One spike: magnitude rule (massive) or z rule; its rank by magnitude after each stage.

    Ranks are 1 + the number of the token's dimensions with a strictly larger magnitude:
    rank_in of |x|, rank_centred of |x - c|, rank_weighted of |y - b|, rank_out of |y|.
    """

    sequence: int
    token: int
    head: int | None  # the head, for a norm that sees heads (q/k norms); None otherwise
    dim: int
    value: float  # x at this dimension
    out_value: float  # the norm's output y at this dimension
    z: float  # (x - mean) / std, or x / rms for RMSNorm
    massive: bool  # passes the magnitude rule (Sun et al. 2024)
    rank_in: int
    rank_centred: int
    rank_weighted: int
    rank_out: int
    changed_by: str | None  # the first stage whose rank differs, when rank_out != rank_in
    gain: float = float("nan")  # the effective weight at this dim: (y - b) / z
    bias: float | None = None  # the bias at this dim (None: the norm has none)


@dataclass
class ChangedBy:
    """How many spikes' ranks each stage changed (the first stage to change it counts)."""

    centre: int
    weight: int
    bias: int


@dataclass
class KindOrder:
    """The order counts of one kind of spike: massive activations, or z-rule outliers."""

    spikes: int
    ranked: int
    rank_kept: float  # NaN without a ranked spike
    pairs: int  # same-token pairs of ranked spikes of this kind with different |x|
    pairs_kept: float
    changed_by: ChangedBy


@dataclass
class OrderStats:
    """Whether the norm keeps the order of the spikes, over all spikes of the module, and
    for each kind apart (`massive`, `outlier`: the z-rule spikes that are not massive)."""

    spikes: int  # spikes found (every token, every call)
    ranked: int  # spikes whose ranks were measured: the per_token largest |x| of each token
    rank_kept: float  # share of the ranked spikes with rank_out == rank_in; NaN without one
    pairs: int  # same-token pairs of ranked spikes with different |x|
    pairs_kept: float  # share of those pairs whose |x| order holds in |y|; NaN without one
    changed_by: ChangedBy
    spike_count: np.ndarray = field(metadata=meta(dtype="int64"))  # per token
    # secondary, over all dimensions: share of the k largest |x| among the k largest |y|
    topk_retention: np.ndarray
    massive: KindOrder | None = field(default=None, metadata=meta(omit_none=True))
    outlier: KindOrder | None = field(default=None, metadata=meta(omit_none=True))


@dataclass
class AcrossToken:
    """The order across the tokens of one sequence in one dimension that spikes somewhere."""

    dim: int
    rho: float  # Spearman over tokens of x[:, dim] vs y[:, dim]
    rho_abs: float  # the same of |x| vs |y|: order of magnitudes
    compression_in: float  # max over tokens of |x[:, dim]| / its median over tokens
    compression_out: float  # the same of |y[:, dim]|
    sequence: int = 0
    head: int | None = None
    tokens: int = 0  # how many tokens it was computed over


@dataclass
class PositionCount:
    """Spikes at token positions start .. stop - 1."""

    start: int
    stop: int
    count: int


@dataclass
class TokenCount:
    """Spikes carried by one token (its text)."""

    token: str  # its text, or #id without a tokenizer
    count: int
    id: int = -1


@dataclass
class CensusEntry:
    """One dimension of one module over the whole input: how often and where it spikes."""

    dim: int
    count: int  # spikes in this dimension (every token, every head)
    max_abs: float  # max |x| of the dimension over the whole input
    first_token_share: float  # share of its spikes on the first token of a sequence
    positions: list[PositionCount]  # ranked spikes per range of positions
    tokens: list[TokenCount]  # the tokens most often carrying its ranked spikes
    sequences: int = 0  # sequences in which it spikes at least once
    massive: int = 0  # of `count`, the massive activations
    massive_first_share: float = float("nan")  # share of those on the first token
    max_at: list[int] = field(default_factory=list)  # [sequence, token] of the max |x|
    massive_tokens: list[TokenCount] = field(default_factory=list)  # of the massive ones
    outlier_tokens: list[TokenCount] = field(default_factory=list)  # of the z-rule ones


@dataclass
class SpikeCounts:
    """Every dimension of one module with a spike, and its counts over the whole input: the
    census's numbers in full, where its entries list the dimensions with the most."""

    dims: list[int]
    count: list[int]
    massive: list[int]
    first: list[int]  # of `count`, on the first token of a sequence
    massive_first: list[int]
    sequences: list[int]  # sequences with at least one spike in the dimension


@dataclass
class DimensionStats:
    """Per feature dimension j over every token: mean and max of |x_j| (input) and |y_j|
    (output), and the outlier dimensions, whose mean is more than k standard deviations
    (over dimensions) above the mean over dimensions (Kovaleva et al. 2021)."""

    tokens: int  # (token, head) rows the means are over
    k: float
    mean_abs_in: np.ndarray
    max_abs_in: np.ndarray
    mean_abs_out: np.ndarray
    max_abs_out: np.ndarray
    outliers_in: list[int]  # largest mean first
    outliers_out: list[int]
    spiking: SpikeCounts | None = field(default=None, metadata=meta(omit_none=True))
    # (d, 2): [sequence, token] of each dimension's max |x_j| (module order: token is the token)
    max_at_in: np.ndarray | None = field(default=None, metadata=meta(dtype="int64", omit_none=True))


@dataclass
class Trajectory:
    """Sun et al.'s Fig. 1 view: the top dimensions' max |x| and max |y| at every norm.

    Arrays are [dim][norm]; the norms are those of the model's width, in model order.
    """

    dims: list[int]
    norms: list[str]
    max_abs_in: np.ndarray
    max_abs_out: np.ndarray


@dataclass
class Ablation:
    """LM loss with the massive activations at the first layer that has them replaced.

    `loss` is unchanged, `loss_mean` with them set to their dimension's mean over the
    massive entries of `texts` other texts, `loss_zero` with them set to 0 (Sun et al. 2024,
    Table 2). `changes_mean` / `changes_zero`: the same change of the loss for each of the
    other texts, with the mean over the rest (the spread). `layer` is None (and the losses
    NaN) when no residual-stream norm saw a massive activation.
    """

    layer: int | None
    dims: list[int]
    loss: float
    loss_mean: float
    loss_zero: float
    module: str | None = None  # the norm whose input (the block's input) was ablated
    entries: int = 0  # (token, dim) entries replaced, over all sequences
    texts: int = 0  # other texts the mean is taken over
    reference_entries: int = 0  # massive entries of those texts at that norm
    no_mean: list[int] = field(default_factory=list)  # dims the other texts never had: kept
    mean_is_value: bool = False  # every mean equalled the value it replaced: no test at all
    changes_mean: list[float] = field(default_factory=list)  # per other text
    changes_zero: list[float] = field(default_factory=list)
    # what was asked for: only these dimensions, at this layer (absent: every one, the first)
    chosen_dims: list[int] | None = field(default=None, metadata=meta(omit_none=True))
    chosen_layer: int | None = field(default=None, metadata=meta(omit_none=True))

    def where(self) -> str:
        """Where massive activations were looked for: "" when nothing was chosen."""
        dims = f" in dims {', '.join(map(str, self.chosen_dims))}" if self.chosen_dims else ""
        layer = f" at layer {self.chosen_layer}" if self.chosen_layer is not None else ""
        return f"{layer}{dims}"


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
    # what it normalizes (lninspect.roles.STREAMS); documents before it: from role and placement
    reads: str = field(default="", kw_only=True)
    eps: float
    weight: WeightSummary | None

    def __post_init__(self) -> None:
        self.reads = self.reads or stream_of(self.role, self.placement)


@dataclass
class NormStats(NormDescription):
    """Everything captured for one normalization module."""

    input: InputStats
    output: OutputStats
    calls: int = 1  # forward calls seen; more than the passes means it fired twice per pass
    # the axis of the per-token arrays that holds tokens, where they also hold heads (a q/k
    # norm): (sequences, heads, tokens) in Gemma 3, (sequences, tokens, heads) in Qwen 3
    token_axis: int | None = field(default=None, metadata=meta(omit_none=True))
    # Absent from the JSON when not captured:
    grad: GradStats | None = field(default=None, metadata=meta(omit_none=True))
    spikes: list[Spike] | None = field(
        default=None, metadata=meta(omit_none=True)
    )  # largest |x| first, at most SpikeOptions.max_spikes
    order: OrderStats | None = field(default=None, metadata=meta(omit_none=True))
    across_token: list[AcrossToken] | None = field(default=None, metadata=meta(omit_none=True))
    census: list[CensusEntry] | None = field(default=None, metadata=meta(omit_none=True))
    dimensions: DimensionStats | None = field(default=None, metadata=meta(omit_none=True))
    # how far s is from a constant (lninspect.scale): derived from the per-token s when absent
    scale: ScaleSpread | None = field(default=None, metadata=meta(omit_none=True))
    # a bounded sample of the map ŷ(x) and its fits (--map; lninspect.mapfit)
    map: NormMap | None = field(default=None, metadata=meta(omit_none=True))
    # the loss change with its s frozen alone (--freeze-scale; lninspect.results.freeze)
    freeze: NormFreeze | None = field(default=None, metadata=meta(omit_none=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale is None:
            self.scale = scale_spread(self.denominator, self.token_axis)

    @property
    def denominator(self) -> np.ndarray:
        """What the module divides by: std for LayerNorm, rms for RMSNorm."""
        return np.asarray(getattr(self.input, denominator_key(self.kind)))


@dataclass
class NormsResult(Document):
    """The normalization modules of a model: what `lninspect norms` shows."""

    SCHEMAS: ClassVar[tuple[str, ...]] = (NORMS_SCHEMA,)

    model: ModelInfo
    norms: list[NormDescription]
    notes: list[str] = field(default_factory=list)
    schema: str = NORMS_SCHEMA


@dataclass
class StatsResult(Document, ByName[NormStats]):
    """The statistics of every normalization module of one model on one input."""

    SCHEMAS: ClassVar[tuple[str, ...]] = STATS_SCHEMAS + GRADS_SCHEMAS  # what from_json reads

    model: ModelInfo
    input: InputInfo
    norms: list[NormStats]
    passes: int = 1  # forward passes of the model while capturing
    notes: list[str] = field(default_factory=list)
    # The spike rules and the k of top-k retention, when spikes were captured:
    spike_z: float | None = None
    spike_abs: float | None = None
    spike_ratio: float | None = None
    top_k: int | None = None
    trajectory: Trajectory | None = field(default=None, metadata=meta(omit_none=True))
    ablation: Ablation | None = field(default=None, metadata=meta(omit_none=True))
    freeze: Freeze | None = field(default=None, metadata=meta(omit_none=True))  # --freeze-scale
    schema: str = STATS_SCHEMA

    def to_dataframe(self, tokenizer: Any = None) -> Any:
        """A pandas DataFrame in long format, one row per number (lninspect.results.frames);
        `tokenizer` gives the token texts of a capture() result (it holds the ids only)."""
        from lninspect.results.frames import stats_frame

        return stats_frame(self, tokenizer)

    def _repr_html_(self) -> str | None:
        """A notebook's view: the stats table and a small figure (lninspect.display)."""
        return html_view(self)


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

    SCHEMAS: ClassVar[tuple[str, ...]] = GRADS_SCHEMAS

    loss: float = float("nan")
    loss_kind: str = "next-token cross-entropy, mean over predicted tokens"
    params: list[ParamGrad] = field(default_factory=list)
    schema: str = GRADS_SCHEMA
