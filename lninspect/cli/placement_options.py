"""The defaults and checks of `lninspect placement` and its `--train` mode (no torch, no numpy).

The two modes share the model's options but not their defaults: the measurement at
initialization is one backward pass per seed and affords d = 256 and 8 seeds in seconds; the
training runs a grid of models for hundreds of steps and must finish on two CPU cores in a
few minutes (docs/placement.md says what each default costs, measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lninspect.cli.options import positive_ints
from lninspect.options import is_device_name

INIT_SEEDS = 8
TRAIN_SEEDS = 3
INIT_SHAPE: dict[str, Any] = {
    "layers": 12,
    "d_model": 256,
    "seeds": INIT_SEEDS,
    "seq_len": 128,
    "batch": 4,
}
TRAIN_SHAPE: dict[str, Any] = {
    "layers": 6,
    "d_model": 64,
    "seeds": TRAIN_SEEDS,
    "seq_len": 64,
    "batch": 8,
}
TRAIN_STEPS = 200
TRAIN_WARMUP = 50
TRAIN_LRS = "1e-3,3e-3"
TRAIN_EVAL_EVERY = 20
TRAIN_STATS_EVERY = 25


def positive_floats(value: str) -> list[float]:
    """`1e-3,3e-3` -> [0.001, 0.003], sorted and without repeats; BadParameter otherwise."""
    try:
        numbers = sorted({float(v) for v in value.split(",")})
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of numbers") from None
    if not all(0 < n < float("inf") for n in numbers):
        raise typer.BadParameter(f"'{value}': every learning rate must be a positive number")
    return numbers


def check_rates(value: str) -> str:
    positive_floats(value)
    return value


def check_optional_depths(value: str | None) -> str | None:
    if value is not None:
        positive_ints(value)
    return value


def check_device(value: str) -> str:
    if not is_device_name(value):
        raise typer.BadParameter(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value


def check_mode(
    train: bool, depths: list[int], *, text: str | None, file: Path | None, device: str
) -> None:
    """Options that belong to one mode only are refused in the other, before any work."""
    if train and len(depths) > 1:
        raise typer.BadParameter(
            "--train trains one depth: run it once per depth", param_hint="'--layers'"
        )
    if train and text is not None:
        raise typer.BadParameter(
            "--train reads a text file (--file), not --text", param_hint="'--text'"
        )
    if not train and file is not None:
        raise typer.BadParameter(
            "--file is the training text of --train; at initialization use --text",
            param_hint="'--file'",
        )
    if not train and device != "cpu":
        raise typer.BadParameter(
            "the measurement at initialization runs on the CPU; --device is for --train",
            param_hint="'--device'",
        )
