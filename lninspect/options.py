"""Options shared by the analysis commands (plain data: importing this is cheap)."""

from __future__ import annotations

import re
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
    layers: tuple[int, ...] | None = None  # hook only these blocks' norms (None: every norm)
    stride: int | None = None  # windows over the whole text, one every `stride` tokens
    device_map: str | None = (
        None  # accelerate's device_map (lninspect.model.device_map); None: `device`
    )
    max_memory: str | None = None  # `cuda:0=20GiB,cpu=60GiB`, with device_map


@dataclass(frozen=True)
class SpikeOptions:
    """What counts as a spike, and how much of them to keep (docs/metrics.md)."""

    z: float = 6.0  # a dimension with |z| >= z is a spike
    top_k: int = 8  # k of the top-k retention
    max_spikes: int = 100  # per module and forward call, largest |z| first


MAX_LAYER = 10_000  # a bound on --layers before the model is known (models have far fewer)


def parse_layers(value: str) -> tuple[int, ...]:
    """`0,3,8-11` -> (0, 3, 8, 9, 10, 11), sorted, without repeats; ValueError otherwise."""
    layers: set[int] = set()
    for part in value.split(","):
        first, dash, last = part.strip().partition("-")
        if not first and last.strip():
            raise ValueError(f"'{part.strip()}' is negative: layers count from 0")
        if not (_digits(first) and (not dash or _digits(last))):
            raise ValueError(
                f"'{value}' is not a list of layers such as 0,3,11 or 0-5 (layers count from 0)"
            )
        low, high = int(first), int(last) if dash else int(first)
        if low > high:
            raise ValueError(f"'{part.strip()}' is an empty range: write the lower layer first")
        if high >= MAX_LAYER:
            raise ValueError(f"layer {high} is beyond any model (at most {MAX_LAYER - 1})")
        layers.update(range(low, high + 1))
    return tuple(sorted(layers))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # what --device accepts


def is_device_name(value: str) -> bool:
    """Whether `value` names a device lninspect can try: auto, cpu, mps, cuda or cuda:N."""
    return DEVICE_PATTERN.fullmatch(value) is not None
