"""Results of `lninspect placement`: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers. Per-layer arrays have one value per block,
averaged over the seeds; `*_std` arrays hold the spread (standard deviation) over them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PLACEMENT_SCHEMA = "lninspect.placement/1"
# Weights whose gradient norm is reported per layer; ffn_out is W^{2,l} of the paper.
GRAD_KEYS = ("ffn_out", "ffn_in", "attn_out", "norm_weight")
# Norms whose input statistics are recorded: per block (ln_1, ln_2) and the final one.
NORM_KEYS = ("ln_1", "ln_2", "ln_f")


@dataclass
class PlacementConfig:
    """What the experiment runs: the model shape shared by every run, and its input."""

    layers: list[int] = field(default_factory=lambda: [12])  # block counts L to compare
    d_model: int = 256  # width d of the residual stream
    heads: int = 4  # attention heads
    mlp_ratio: int = 1  # FFN hidden width / d
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    init: str = "xavier"  # "xavier" (the paper's setting) or "gpt2" (the control)
    seeds: int = 3  # models (and token batches) per configuration, averaged
    vocab_size: int = 2048
    seq_len: int = 128  # tokens per sequence
    batch: int = 4  # sequences per seed
    tokens: str = "random"  # "random" (seeded) or "text" (the bytes of --text)


@dataclass
class PlacementRun:
    """One placement at one depth: per-layer gradient norms and norm-input statistics."""

    placement: str  # "pre" or "post"
    norm: str
    layers: int
    grad_norm: dict[str, np.ndarray]  # GRAD_KEYS -> (layers,) Frobenius norms of dL/dW
    grad_norm_std: dict[str, np.ndarray]  # the same keys: spread over seeds
    input_std: dict[str, np.ndarray]  # NORM_KEYS -> mean per-token sqrt(var(x) + eps)
    input_ms: dict[str, np.ndarray]  # NORM_KEYS -> E|x|^2 / d, Lemma 2's quantity
    loss: float  # LM loss at initialization, mean over seeds (about ln vocab_size)

    def last(self, key: str = "ffn_out") -> float:
        """The gradient norm of the last block's weight `key`."""
        return float(self.grad_norm[key][-1])


@dataclass
class SweepRow:
    """The last block's FFN-output gradient at one depth L, and the paper's sqrt(L) law."""

    layers: int
    pre: float
    post: float
    ratio: float  # post / pre
    expected: float  # sqrt(L / L0) * ratio(L0), L0 the smallest depth run


@dataclass
class PlacementResult:
    """Every run of one `lninspect placement` call."""

    config: PlacementConfig
    runs: list[PlacementRun]
    notes: list[str] = field(default_factory=list)
    schema: str = PLACEMENT_SCHEMA

    def run(self, placement: str, layers: int) -> PlacementRun:
        """The run of `placement` at depth `layers`."""
        for run in self.runs:
            if run.placement == placement and run.layers == layers:
                return run
        raise KeyError((placement, layers))

    def sweep(self) -> list[SweepRow]:
        """One row per depth, in increasing L."""
        depths = sorted({run.layers for run in self.runs})
        pairs = [(self.run("pre", n).last(), self.run("post", n).last()) for n in depths]
        first = pairs[0][1] / pairs[0][0]
        return [
            SweepRow(n, pre, post, post / pre, math.sqrt(n / depths[0]) * first)
            for n, (pre, post) in zip(depths, pairs, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become lists, non-finite floats null."""
        return {
            "schema": self.schema,
            "config": asdict(self.config),
            "runs": [_run_to_json(run) for run in self.runs],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PlacementResult:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        if doc.get("schema") != PLACEMENT_SCHEMA:
            raise ValueError(f"not a {PLACEMENT_SCHEMA} document: schema {doc.get('schema')!r}")
        return cls(
            config=PlacementConfig(**doc["config"]),
            runs=[_run_from_json(run) for run in doc["runs"]],
            notes=list(doc.get("notes", [])),
            schema=doc["schema"],
        )


def growth_exponent(rows: list[SweepRow]) -> float:
    """The slope of log(post/pre) against log L (the paper predicts 0.5); NaN for one depth."""
    if len(rows) < 2:
        return float("nan")
    logs = np.log([[row.layers, row.ratio] for row in rows])
    return float(np.polyfit(logs[:, 0], logs[:, 1], 1)[0])


_ARRAY_FIELDS = ("grad_norm", "grad_norm_std", "input_std", "input_ms")


def _run_to_json(run: PlacementRun) -> dict[str, Any]:
    doc = asdict(run)
    for name in _ARRAY_FIELDS:
        doc[name] = {key: _floats(values) for key, values in getattr(run, name).items()}
    doc["loss"] = _floats(np.asarray([run.loss]))[0]
    return doc


def _run_from_json(doc: dict[str, Any]) -> PlacementRun:
    arrays = {
        name: {key: _array(values) for key, values in doc[name].items()} for name in _ARRAY_FIELDS
    }
    loss = doc["loss"]
    return PlacementRun(
        placement=doc["placement"],
        norm=doc["norm"],
        layers=doc["layers"],
        loss=float("nan") if loss is None else float(loss),
        **arrays,
    )


def _floats(values: np.ndarray) -> list[float | None]:
    """A 1-D array as a list of floats, None for non-finite entries."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def _array(values: list[float | None]) -> np.ndarray:
    """A list from `_floats` back to a float64 array (None -> NaN)."""
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
