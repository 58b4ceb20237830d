"""What a run is asked to do, as plain data (importing this is cheap: no torch, no numpy).

The CLI builds these from its options; the jobs (lninspect.jobs, lninspect.corpus.job) and
the Python API take them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from lninspect.errors import LninspectError

# Told after each unit of a long job: (units done, units in all, what runs now).
Progress = Callable[[int, int, str], None]

# The choices of the run's string options, as types (the CLI offers them as its choices)
DType = Literal["float32", "bfloat16", "float16"]
DeviceMap = Literal["auto", "balanced", "balanced_low_0", "sequential"]  # accelerate's names
Reductions = Literal["auto", "eager", "compiled"]  # lninspect.hooks.fused
Bos = Literal["auto", "yes", "no"]
Loss = Literal["ce", "target"]  # next-token cross-entropy, or -log p(target) at the end


def choices(kind: object) -> tuple[str, ...]:
    """The strings of one of the Literal types above: choices(DType) -> ("float32", ...)."""
    return get_args(kind)


def check_at_least(low: int, **values: float | None) -> None:
    """Refuse a value below `low` (None: not given), naming it as the caller passed it."""
    for name, value in values.items():
        if value is not None and value < low:
            raise LninspectError(f"{name}={value} is below {low}")


@dataclass(frozen=True)
class RunOptions:
    """The model, the text and where to run: what every analysis of one text shares.

    `model` None means the default model (see lninspect.model.sources.default_model).
    """

    model: str | None = None
    text: str | None = None
    file: Path | None = None
    encoding: str = "utf-8"
    max_tokens: int | None = None
    device: str = "auto"
    dtype: DType = "float32"
    revision: str | None = None
    trust_remote_code: bool = False
    seed: int = 0
    layers: tuple[int, ...] | None = None  # hook only these blocks' norms (None: every norm)
    stride: int | None = None  # windows over the whole text, one every `stride` tokens
    device_map: DeviceMap | None = (
        None  # accelerate's device_map (model.device_map); None: `device`
    )
    max_memory: str | None = None  # `cuda:0=20GiB,cpu=60GiB`, with device_map
    reductions: Reductions = "auto"  # per-token reductions (lninspect.hooks.fused)
    norm_classes: tuple[str, ...] = ()  # class names of the model's modules hooked as norms too
    gguf_file: str | None = None  # a GGUF file in the folder `model` (a .gguf `model` needs none)
    bos: Bos = "auto"  # a BOS token first: auto (as the tokenizer does), yes, no
    chat_template: bool = False  # the text as a user turn of the tokenizer's chat template

    def __post_init__(self) -> None:
        check_at_least(1, max_tokens=self.max_tokens, stride=self.stride)


@dataclass(frozen=True)
class SpikeOptions:
    """What counts as a spike, and how much of them to keep (docs/metrics.md).

    A spike passes the magnitude rule (|x| > `spike_abs` and > `spike_ratio` x the median |x|
    of the module's input in its sequence: Sun et al. 2024's massive activations) or the z
    rule (|z| >= `spike_z`). The caps keep every buffer on the device a fixed size. The three
    rules have these names wherever they appear: here, in the results, and as flags.
    """

    spike_z: float = 6.0  # the z rule: |z| >= spike_z
    spike_abs: float = 100.0  # the magnitude rule: |x| > spike_abs ...
    spike_ratio: float = 1000.0  # ... and |x| > spike_ratio x the layer's median |x|
    top_k: int = 8  # k of the secondary top-k retention column
    max_spikes: int = 100  # spikes listed per module, largest |x| first
    per_token: int = 8  # spikes ranked per token (largest |x|); more are counted, not ranked
    across_dims: int = 16  # (head, dim) columns per call whose across-token order is measured
    census_dims: int = 16  # census entries per module, most spikes first
    outlier_k: float = 3.0  # an outlier dimension: mean |x_j| > k std above the mean over j
    ablate_file: Path | None = None  # the other texts of the ablation's mean (None: bundled)
    ablate_dims: tuple[int, ...] | None = None  # only these dimensions (None: every one)
    ablate_layer: int | None = None  # at this layer (None: the first with a massive one)


@dataclass(frozen=True)
class MapOptions:
    """What the norm's map asks for (docs/metrics.md, "The norm's map"): `sample` the
    (x, ŷ) pairs and their fits (--map), `freeze` the loss with s frozen (--freeze-scale)."""

    sample: bool = False
    size: int = 4096  # pairs kept per norm: half each token's largest |x|, half uniform
    per_token: int = 2  # largest-|x| elements of each token offered to the tails' half
    seed: int = 0  # of the uniform draws and the reservoirs' keys
    freeze: bool = False
    calibration_file: Path | None = None  # the calibration text of the frozen s (None: bundled)

    def __post_init__(self) -> None:
        if self.size < 2:
            raise LninspectError(f"map_size={self.size}: at least 2 pairs (one per stratum)")
        if self.per_token < 1:
            raise LninspectError(f"map_per_token={self.per_token}: at least 1")

    @property
    def tail_size(self) -> int:
        return self.size // 2

    @property
    def uniform_size(self) -> int:
        return self.size - self.size // 2


GLOB_CHARS = frozenset("*?[")
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class CorpusOptions:
    """How to read a corpus (`lninspect stats --file ... --lines/--field/--seq-len ...`)."""

    files: tuple[str, ...] = ()  # paths or glob patterns, as given
    lines: bool = False  # one document per non-empty line
    field: str | None = None  # JSONL: the document is this field of each line's object
    seq_len: int | None = None  # None: min(model context, corpus.reader.DEFAULT_SEQ_LEN)
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE
    max_sequences: int | None = None  # over all processes
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        sizes = {"batch_size": self.batch_size, "max_sequences": self.max_sequences}
        check_at_least(1, seq_len=self.seq_len, **sizes)

    @property
    def requested(self) -> bool:
        """Whether these options ask for corpus mode rather than one text from one file."""
        asked = (self.lines, self.field, self.seq_len, self.batch_size, self.max_sequences)
        return (
            any(v not in (None, False) for v in asked)
            or len(self.files) > 1
            or any(is_pattern(f) for f in self.files)
        )

    @property
    def batch(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE


def is_pattern(path: str) -> bool:
    """Whether a --file value is a glob pattern: it has *, ? or [ and names no existing path
    (so that `notes[draft].txt` is that file)."""
    return any(c in GLOB_CHARS for c in path) and not os.path.lexists(path)


MAX_LAYER = 10_000  # a bound on --layers before the model is known (models have far fewer)


def parse_layers(value: str) -> tuple[int, ...]:
    """`0,3,8-11` -> (0, 3, 8, 9, 10, 11), sorted, without repeats; ValueError otherwise."""
    return parse_indices(value, "layer", MAX_LAYER)


MAX_DIM = 1 << 20  # a bound on a hidden dimension's index before the model is known


def parse_indices(value: str, noun: str, limit: int) -> tuple[int, ...]:
    """`0,3,8-11` -> (0, 3, 8, 9, 10, 11) for a list of layers or dimensions (`noun`),
    sorted, without repeats, each below `limit`; ValueError otherwise."""
    found: set[int] = set()
    for part in value.split(","):
        first, dash, last = part.strip().partition("-")
        if not first and last.strip():
            raise ValueError(f"'{part.strip()}' is negative: {noun}s count from 0")
        if not (_digits(first) and (not dash or _digits(last))):
            raise ValueError(
                f"'{value}' is not a list of {noun}s such as 0,3,11 or 0-5 ({noun}s count from 0)"
            )
        low, high = int(first), int(last) if dash else int(first)
        if low > high:
            raise ValueError(f"'{part.strip()}' is an empty range: write the lower {noun} first")
        if high >= limit:
            raise ValueError(f"{noun} {high} is beyond any model (at most {limit - 1})")
        found.update(range(low, high + 1))
    return tuple(sorted(found))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # what --device accepts


def is_device_name(value: str) -> bool:
    """Whether `value` names a device lninspect can try: auto, cpu, mps, cuda or cuda:N."""
    return DEVICE_PATTERN.fullmatch(value) is not None
