"""The defaults and checks of `lninspect placement` and its `--train` mode (no torch, no numpy).

The two modes share the model's options but not their defaults: the measurement at
initialization is one backward pass per seed and affords d = 256 and 8 seeds in seconds; the
training runs a grid of models for hundreds of steps and must finish on two CPU cores in a
few minutes (docs/placement.md says what each default costs, measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lninspect.cli.options import Init, NormKind, positive_ints
from lninspect.cli.shared import Given, Shared
from lninspect.options import is_device_name
from lninspect.placement.layouts import DEFAULT_BASELINE, LAYOUTS

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
INIT_LAYOUTS = ",".join(LAYOUTS)  # every layout: measured to cost well under a minute
TRAIN_LAYOUTS = "pre,post"  # each layout adds the whole grid's minutes of CPU


def layout_names(value: str) -> list[str]:
    """`pre,post,peri` -> the names in that order, without repeats; BadParameter otherwise."""
    names = list(dict.fromkeys(v.strip() for v in value.split(",")))
    unknown = [name for name in names if name not in LAYOUTS]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: the layouts are {', '.join(LAYOUTS)}")
    return names


def check_layouts(value: str | None) -> str | None:
    if value is not None:
        layout_names(value)
    return value


def check_baseline(value: str) -> str:
    if value not in LAYOUTS:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(LAYOUTS)}")
    return value


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
    train: bool,
    depths: list[int],
    *,
    text: str | None,
    file: Path | None,
    device: str,
    log_dir: Path | None = None,
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
    if not train and log_dir is not None:
        raise typer.BadParameter(
            "--log-dir keeps the logs of --train runs", param_hint="'--log-dir'"
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


TRAINING = "Training (--train; docs/placement.md)"


def _option(kind: Any, *decls: str, **info: Any) -> Any:
    """An `Annotated` option of `placement`; the --train ones in the Training panel."""
    return Annotated[kind, typer.Option(*decls, **info)]


def _training(kind: Any, *decls: str, **info: Any) -> Any:
    return _option(kind, *decls, rich_help_panel=TRAINING, **info)


# The options of `placement`, in the order of its --help; `into` is empty: the two configs
# are built below (their defaults depend on the mode).
PLACEMENT = (
    Shared(
        "layers",
        _option(
            str | None,
            callback=check_optional_depths,
            show_default=False,
            help="Depths L, comma-separated; several make a sweep. Default: 12; 6 with --train "
            "(one depth only).",
        ),
        (),
        default=None,
    ),
    Shared(
        "placements",
        _option(
            str | None,
            "--placements",
            callback=check_layouts,
            show_default=False,
            help=f"Norm layouts, comma-separated, of {', '.join(LAYOUTS)} "
            f"(docs/placement.md). Default: all; {TRAIN_LAYOUTS} with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "baseline",
        _option(
            str,
            callback=check_baseline,
            help="The layout every ratio divides by, seed by seed; one of --placements.",
        ),
        (),
        default=DEFAULT_BASELINE,
    ),
    Shared(
        "d_model",
        _option(
            int | None,
            min=8,
            show_default=False,
            help="Width d of the residual stream. Default: 256; 64 with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "heads", _option(int, min=1, help="Attention heads; must divide --d-model."), (), default=4
    ),
    Shared(
        "mlp_ratio",
        _option(int, min=1, help="FFN hidden width / d: 1 as in the paper's analysis, 4 in GPT-2."),
        (),
        default=1,
    ),
    Shared(
        "norm",
        _option(NormKind, help="The norm in every position."),
        (),
        default=NormKind.layernorm,
    ),
    Shared(
        "init",
        _option(
            Init,
            help="xavier: the paper's setting (Xavier-normal, no residual scaling); gpt2: "
            "N(0, 0.02) with residual projections scaled by 1/sqrt(2L), the control.",
        ),
        (),
        default=Init.xavier,
    ),
    Shared(
        "seeds",
        _option(
            int | None,
            min=1,
            show_default=False,
            help=f"Models (and token batches) per configuration; intervals are over them. "
            f"Default: {INIT_SEEDS}; {TRAIN_SEEDS} with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "text",
        _option(
            str | None,
            "--text",
            "-t",
            show_default=False,
            help="Use the UTF-8 bytes of this text as tokens (default: seeded random tokens).",
        ),
        (),
        default=None,
    ),
    Shared(
        "train",
        _training(
            bool,
            "--train",
            help="Train the layouts instead: learning rate x warm-up x layout.",
        ),
        (),
        default=False,
    ),
    Shared(
        "steps", _training(int, min=1, help="Optimizer steps per run."), (), default=TRAIN_STEPS
    ),
    Shared(
        "warmup",
        _training(
            int,
            min=0,
            help="Steps of linear warm-up; every run is also made without one (0: only without).",
        ),
        (),
        default=TRAIN_WARMUP,
    ),
    Shared(
        "lr",
        _training(str, "--lr", callback=check_rates, help="Peak learning rates, comma-separated."),
        (),
        default=TRAIN_LRS,
    ),
    Shared(
        "file",
        _training(
            Path | None,
            "--file",
            "-f",
            show_default=False,
            help="Train on this text file (default: the shipped Python docs text); documents "
            "are separated by <|endoftext|> lines.",
        ),
        (),
        default=None,
    ),
    Shared(
        "seq_len",
        _option(
            int | None,
            min=2,
            show_default=False,
            help="Tokens per sequence. Default: 128; 64 with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "batch",
        _option(
            int | None,
            min=1,
            show_default=False,
            help="Sequences per seed (per step with --train). Default: 4; 8 with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "dropout",
        _training(float, min=0.0, max=0.9, help="Dropout while training."),
        (),
        default=0.1,
    ),
    Shared(
        "eval_every",
        _training(int, min=1, help="Held-out loss every N steps."),
        (),
        default=TRAIN_EVAL_EVERY,
    ),
    Shared(
        "stats_every",
        _training(int, min=1, help="The norms' input statistics every N steps."),
        (),
        default=TRAIN_STATS_EVERY,
    ),
    Shared(
        "log_dir",
        _training(
            Path | None,
            "--log-dir",
            show_default=False,
            help="Write each run's lninspect.watch log into a folder of its own here "
            "(<layout>-warmup<N>-lr<LR>-seed<S>/), for `lninspect run`.",
        ),
        (),
        default=None,
    ),
    Shared(
        "target_loss",
        _training(
            float | None,
            show_default=False,
            help="Held-out loss that 'steps to target' counts to (default: 10% of the way from "
            "the best run back to the start).",
        ),
        (),
        default=None,
    ),
    Shared(
        "device",
        _training(
            str, callback=check_device, help="Where to train: cpu, cuda, cuda:N, mps or auto."
        ),
        (),
        default="cpu",
    ),
)


def placement_config(given: Given) -> Any:
    """The model and the data of either mode, its defaults filled in (TRAIN_SHAPE with --train,
    INIT_SHAPE without), checked against the mode."""
    from lninspect.results.placement import PlacementConfig

    train = given["train"]
    shape = TRAIN_SHAPE if train else INIT_SHAPE
    depths = positive_ints(given["layers"] or str(shape["layers"]))
    d_model, heads = given["d_model"] or shape["d_model"], given["heads"]
    if d_model % heads:
        raise typer.BadParameter(
            f"{d_model} is not divisible by --heads {heads}", param_hint="'--d-model'"
        )
    check_mode(
        train,
        depths,
        text=given["text"],
        file=given["file"],
        device=given["device"],
        log_dir=given["log_dir"],
    )
    layouts = layout_names(given["placements"] or (TRAIN_LAYOUTS if train else INIT_LAYOUTS))
    if given["baseline"] not in layouts:
        raise typer.BadParameter(
            f"'{given['baseline']}' is not among --placements {','.join(layouts)}",
            param_hint="'--baseline'",
        )
    return PlacementConfig(
        layers=depths,
        d_model=d_model,
        heads=heads,
        mlp_ratio=given["mlp_ratio"],
        norm=given["norm"].value,
        init=given["init"].value,
        seeds=given["seeds"] or shape["seeds"],
        seq_len=given["seq_len"] or shape["seq_len"],
        batch=given["batch"] or shape["batch"],
        layouts=layouts,
        baseline=given["baseline"],
    )


def train_config(given: Given) -> Any:
    """The training of --train: steps, warm-up, learning rates, schedule of measurements."""
    from lninspect.results.placement_training import TrainConfig

    return TrainConfig(
        steps=given["steps"],
        warmup=given["warmup"],
        lrs=positive_floats(given["lr"]),
        dropout=given["dropout"],
        eval_every=given["eval_every"],
        stats_every=given["stats_every"],
        target_loss=given["target_loss"],
        device=given["device"],
    )
