"""Options shared by the analysis commands (plain data: importing this is cheap)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOptions:
    """What every analysis command shares: model, text and where to run.

    `model` None means the default model (see lninspect.loading.default_model).
    """

    model: str | None = None
    text: str | None = None
    file: Path | None = None
    encoding: str = "utf-8"
    max_tokens: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    revision: str | None = None
    trust_remote_code: bool = False
    seed: int = 0


@dataclass(frozen=True)
class SpikeOptions:
    """What counts as a spike, and how much of them to keep (docs/metrics.md)."""

    z: float = 6.0  # a dimension with |z| >= z is a spike
    top_k: int = 8  # k of the top-k retention
    max_spikes: int = 100  # per module and forward call, largest |z| first
