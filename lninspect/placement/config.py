"""What the placement experiment runs, as plain data with its defaults and checks (no torch,
no numpy): the model and data of both modes (`PlacementConfig`) and the training
(`TrainConfig`). The CLI reads its defaults and help from here.

The two modes share the model's options but not their defaults: the measurement at
initialization is one backward pass per seed and affords d = 256 and 8 seeds in seconds; the
training runs a grid of models for hundreds of steps and must finish on two CPU cores in a
few minutes (docs/placement.md says what each default costs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from lninspect.errors import LninspectError
from lninspect.options import check_at_least
from lninspect.placement.layouts import DEFAULT_BASELINE, LAYOUTS

NormKind = Literal["layernorm", "rmsnorm"]  # the norm in every position
Init = Literal["xavier", "gpt2"]  # the paper's setting, or GPT-2's (the control)


@dataclass(frozen=True)
class Mode:
    """The defaults of one mode of the experiment: what differs between them."""

    layers: int  # the one depth L
    d_model: int
    seeds: int
    seq_len: int
    batch: int
    layouts: tuple[str, ...]


AT_INIT = Mode(layers=12, d_model=256, seeds=8, seq_len=128, batch=4, layouts=tuple(LAYOUTS))
# each layout adds the whole grid's minutes of CPU
TRAINING = Mode(layers=6, d_model=64, seeds=3, seq_len=64, batch=8, layouts=("pre", "post"))


@dataclass
class PlacementConfig:
    """What the experiment runs: the model shape shared by every run, and its input.

    The defaults are those at initialization (AT_INIT); `for_mode` gives either mode's.
    """

    layers: list[int] = field(default_factory=lambda: [AT_INIT.layers])  # block counts L
    d_model: int = AT_INIT.d_model  # width d of the residual stream
    heads: int = 4  # attention heads
    mlp_ratio: int = 1  # FFN hidden width / d
    norm: NormKind = "layernorm"
    init: Init = "xavier"
    seeds: int = AT_INIT.seeds  # models (and token batches) per configuration
    vocab_size: int = 2048
    seq_len: int = AT_INIT.seq_len  # tokens per sequence
    batch: int = AT_INIT.batch  # sequences per seed (per step in training)
    tokens: str = "random"  # "random" (seeded), "bytes" (of a text) or "text" (training)
    layouts: list[str] = field(default_factory=lambda: list(AT_INIT.layouts))  # in run order
    baseline: str = DEFAULT_BASELINE  # the layout every ratio divides by

    def __post_init__(self) -> None:
        sizes = {"d_model": self.d_model, "heads": self.heads, "mlp_ratio": self.mlp_ratio}
        sizes |= {"seeds": self.seeds, "batch": self.batch, "vocab_size": self.vocab_size}
        check_at_least(1, layers=min(self.layers, default=0), **sizes)
        check_at_least(2, seq_len=self.seq_len)
        for name, value, kind in (("norm", self.norm, NormKind), ("init", self.init, Init)):
            if value not in get_args(kind):
                raise LninspectError(f"{name}={value!r}: use one of {', '.join(get_args(kind))}")
        if self.d_model % self.heads:
            raise LninspectError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        unknown = [name for name in self.layouts if name not in LAYOUTS]
        if unknown or not self.layouts:
            raise LninspectError(
                f"layouts={','.join(self.layouts)}: the layouts are {', '.join(LAYOUTS)}"
            )
        if self.baseline not in self.layouts:
            raise LninspectError(
                f"baseline={self.baseline} is not among layouts={','.join(self.layouts)}"
            )

    @classmethod
    def for_mode(cls, train: bool, **given: Any) -> PlacementConfig:
        """The config of either mode: what `given` leaves out or None takes the mode's
        default (TRAINING with `train`, AT_INIT without)."""
        mode = TRAINING if train else AT_INIT
        defaults: dict[str, Any] = {
            "layers": [mode.layers],
            "d_model": mode.d_model,
            "seeds": mode.seeds,
            "seq_len": mode.seq_len,
            "batch": mode.batch,
            "layouts": list(mode.layouts),
        }
        return cls(**(defaults | {k: v for k, v in given.items() if v is not None}))


@dataclass
class TrainConfig:
    """How every model of the grid is trained (the model's shape is the PlacementConfig's)."""

    steps: int = 200  # optimizer updates per run
    warmup: int = 50  # steps of linear warm-up; every cell is also run without one
    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3])  # peak learning rates
    dropout: float = 0.1  # on the embeddings and each residual branch's output
    eval_every: int = 20  # held-out loss every this many steps (and at 0 and at the end)
    eval_windows: int = 32  # held-out windows of seq_len + 1 tokens, spread over the text
    stats_every: int = 25  # the stream and the norms' statistics every this many steps
    target_loss: float | None = None  # for `steps to target`; None: chosen from the runs
    maps: bool = False  # each norm's map sampled at the first and last held-out evaluation
    device: str = "cpu"
    optimizer: str = "Adam, betas (0.9, 0.98), eps 1e-9, no weight decay"
    text: str = ""  # the text trained on (filled in by the run)
    train_tokens: int = 0
    held_out_tokens: int = 0

    def __post_init__(self) -> None:
        check_at_least(
            1, steps=self.steps, eval_every=self.eval_every, stats_every=self.stats_every
        )
        check_at_least(1, eval_windows=self.eval_windows)
        check_at_least(0, warmup=self.warmup)
        if not self.lrs or not all(0 < lr < math.inf for lr in self.lrs):
            raise LninspectError(f"lrs={self.lrs}: every learning rate must be a positive number")
        if not 0 <= self.dropout <= MAX_DROPOUT:
            raise LninspectError(f"dropout={self.dropout} is outside 0..{MAX_DROPOUT}")

    def eval_steps(self) -> list[int]:
        """The steps at which the held-out loss is measured."""
        return sorted({*range(0, self.steps, self.eval_every), self.steps})

    def stats_steps(self) -> list[int]:
        """The steps at which the norms' input statistics are captured."""
        return list(range(0, self.steps, self.stats_every))


MAX_DROPOUT = 0.9
