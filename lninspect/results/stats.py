"""Result objects: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers, so that rendering and JSON work without them.
Per-token arrays have the shape of the norm's input without its hidden axis,
normally (sequences, tokens); a per-head norm keeps its head axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

STATS_SCHEMA = "lninspect.stats/1"
GRADS_SCHEMA = "lninspect.grads/1"
OPTIONAL_NORM_KEYS = (
    "grad",
    "spikes",
    "order",
    "across_token_spearman",
)  # absent when not captured
NORMS_SCHEMA = "lninspect.norms/1"


@dataclass
class ModelInfo:
    """What was inspected: `source` is one of hub, local, random, bundled, module."""

    name: str
    source: str
    cls: str
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

    mean: np.ndarray  # mean of x
    std: np.ndarray  # sqrt(biased var + eps), the LayerNorm denominator
    rms: np.ndarray  # sqrt(mean(x^2) + eps), the RMSNorm denominator
    absmax: np.ndarray  # max |x|
    absmax_dim: np.ndarray  # hidden index of max |x|
    nonfinite: np.ndarray | None = None  # NaN and Inf entries of x (None: not recorded)


@dataclass
class OutputStats:
    """Per-token mean and (biased, eps-free) std of a norm's output y."""

    mean: np.ndarray
    std: np.ndarray


@dataclass
class WeightSummary:
    """Summary of the effective affine weight a norm multiplies by."""

    mean: float
    std: float
    min: float
    max: float
    negative: int


@dataclass
class GradStats:
    """Per-token gradient norms on both sides of a norm (over its hidden axis)."""

    output_norm: np.ndarray  # |dL/dy|: the gradient arriving at the norm's output
    input_norm: np.ndarray  # |dL/dx| through the norm alone
    residual_norm: np.ndarray  # |dL/dx| in total: every use of x (the residual stream, pre-LN)
    output_nonfinite: np.ndarray | None = None  # NaN and Inf entries of dL/dy (None: not recorded)

    @property
    def scale(self) -> np.ndarray:
        """How much the norm scales the gradient: |dL/dx through it| / |dL/dy|."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.input_norm / self.output_norm


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
    topk_retention: np.ndarray  # share of the k largest |x - centre| among the k largest |y - bias|
    spike_count: np.ndarray  # dims with |z| >= spike_z


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
    role: str  # attn | mlp | attn+mlp | qk | embed | final | other
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
    grad: GradStats | None = None  # only when gradients were captured
    spikes: list[Spike] | None = None  # only when spikes were captured, largest |z| first
    order: OrderStats | None = None
    across_token_spearman: list[AcrossToken] | None = None

    @property
    def denominator(self) -> np.ndarray:
        """What the module divides by: std for LayerNorm, rms for RMSNorm."""
        return self.input.rms if self.kind == "rmsnorm" else self.input.std


@dataclass
class NormsResult:
    """The normalization modules of a model: what `lninspect norms` shows."""

    model: ModelInfo
    norms: list[NormDescription]
    notes: list[str] = field(default_factory=list)
    schema: str = NORMS_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return _document(self)


@dataclass
class StatsResult:
    """The statistics of every normalization module of one model on one input."""

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
        doc = _document(self)
        for norm in doc["norms"]:
            for key in OPTIONAL_NORM_KEYS:
                if norm[key] is None:
                    del norm[key]
            _drop_none(norm["input"], "nonfinite")
            _drop_none(norm.get("grad"), "output_nonfinite")
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StatsResult:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        model = dict(doc["model"])
        model["cls"] = model.pop("class")
        return cls(
            model=ModelInfo(**model),
            input=InputInfo(**doc["input"]),
            norms=[_norm_from_json(n) for n in doc["norms"]],
            passes=doc.get("passes", 1),
            notes=list(doc.get("notes", [])),
            spike_z=doc.get("spike_z"),
            top_k=doc.get("top_k"),
            schema=doc["schema"],
        )


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
    """StatsResult plus gradients: each norm's `grad`, the loss, and every parameter's grad norm."""

    loss: float = float("nan")
    loss_kind: str = "next-token cross-entropy, mean over predicted tokens"
    params: list[ParamGrad] = field(default_factory=list)
    schema: str = GRADS_SCHEMA

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GradsResult:
        base = StatsResult.from_json(doc)
        fields_ = {f.name: getattr(base, f.name) for f in fields(StatsResult)}
        return cls(
            **fields_ | {"schema": doc["schema"]},
            loss=_float(doc["loss"]),
            loss_kind=doc["loss_kind"],
            params=[ParamGrad(**p | {"grad_norm": _float(p["grad_norm"])}) for p in doc["params"]],
        )


def _float(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _document(result: Any) -> dict[str, Any]:
    """The JSON document of a result: schema first, `model.cls` written as `class`."""
    doc = {"schema": result.schema, **_to_plain(result)}
    model = doc["model"]
    doc["model"] = {"class": model.pop("cls"), **model}
    return doc


def _norm_from_json(doc: dict[str, Any]) -> NormStats:
    """Rebuild one NormStats, restoring arrays and their dtypes."""
    inp = doc["input"]
    return NormStats(
        name=doc["name"],
        type=doc["type"],
        kind=doc["kind"],
        layer=doc["layer"],
        role=doc["role"],
        placement=doc.get("placement", "pre"),
        eps=doc["eps"],
        input=InputStats(
            **{k: _array(inp[k]) for k in ("mean", "std", "rms", "absmax")},
            absmax_dim=np.asarray(inp["absmax_dim"], dtype=np.int64),
            nonfinite=_counts(inp.get("nonfinite")),
        ),
        output=OutputStats(**{k: _array(v) for k, v in doc["output"].items()}),
        weight=WeightSummary(**doc["weight"]) if doc["weight"] is not None else None,
        calls=doc.get("calls", 1),
        grad=_grad_from_json(doc["grad"]) if doc.get("grad") else None,
        spikes=[
            Spike(
                **s
                | {
                    "value": _float(s["value"]),
                    "z": _float(s["z"]),
                    "out_value": _float(s["out_value"]),
                }
            )
            for s in doc["spikes"]
        ]
        if doc.get("spikes") is not None
        else None,
        order=OrderStats(**{k: _array(v) for k, v in doc["order"].items()})
        if doc.get("order") is not None
        else None,
        across_token_spearman=[
            AcrossToken(**a | {"rho": _float(a["rho"])}) for a in doc["across_token_spearman"]
        ]
        if doc.get("across_token_spearman") is not None
        else None,
    )


def _grad_from_json(doc: dict[str, Any]) -> GradStats:
    counts = _counts(doc.get("output_nonfinite"))
    return GradStats(
        **{k: _array(v) for k, v in doc.items() if k != "output_nonfinite"}, output_nonfinite=counts
    )


def _counts(values: Any) -> np.ndarray | None:
    """Per-token counts back to an int32 array (None when the JSON has none: older files)."""
    return None if values is None else np.asarray(values, dtype=np.int32)


def _drop_none(doc: dict[str, Any] | None, key: str) -> None:
    """Leave out a key that was not recorded, so that older documents round-trip."""
    if doc is not None and doc.get(key, 0) is None:
        del doc[key]


def _array(values: Any) -> np.ndarray:
    """Nested lists (with None for non-finite) back to a float32 array."""
    arr = np.asarray(values, dtype=object)
    arr[arr == None] = np.nan  # noqa: E711 (elementwise comparison)
    return arr.astype(np.float32)


def _to_plain(value: Any) -> Any:
    """Dataclasses, arrays and numpy scalars to JSON-ready Python values."""
    if hasattr(value, "__dataclass_fields__"):
        return {
            f.name: _to_plain(getattr(value, f.name)) for f in fields(value) if f.name != "schema"
        }
    if isinstance(value, np.ndarray):
        return _to_plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
