"""The options of `lninspect placement` and its `--train` mode (no torch, no numpy).

Their defaults and checks are the library's (lninspect.placement.config): the help quotes
the defaults of both modes; only which options belong to which mode is checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lninspect.cli.flags import as_flags
from lninspect.cli.options import check_device, positive_floats, positive_ints
from lninspect.cli.shared import Given, Shared
from lninspect.errors import LninspectError
from lninspect.placement.config import (
    AT_INIT,
    MAX_DROPOUT,
    TRAINING,
    Init,
    NormKind,
    PlacementConfig,
    TrainConfig,
)
from lninspect.placement.layouts import DEFAULT_BASELINE, LAYOUTS

DEFAULTS = PlacementConfig()
TRAIN = TrainConfig()


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


def check_rates(value: str | None) -> str | None:
    if value is not None:
        positive_floats(value, "learning rate")
    return value


def check_optional_depths(value: str | None) -> str | None:
    if value is not None:
        positive_ints(value)
    return value


def check_mode(
    train: bool,
    depths: list[int],
    *,
    text: str | None,
    file: Path | None,
    device: str,
    log_dir: Path | None = None,
    maps: bool = False,
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
    if not train and maps:
        raise typer.BadParameter(
            "--map samples the maps of the models --train trains", param_hint="'--map'"
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


TRAINING_PANEL = "Training (--train; docs/placement.md)"


def _option(kind: Any, *decls: str, **info: Any) -> Any:
    """An `Annotated` option of `placement`; the --train ones in the Training panel."""
    return Annotated[kind, typer.Option(*decls, **info)]


def _training(kind: Any, *decls: str, **info: Any) -> Any:
    return _option(kind, *decls, rich_help_panel=TRAINING_PANEL, **info)


# The options of `placement`, in the order of its --help; `into` is empty: the two configs
# are built below (their defaults depend on the mode).
PLACEMENT = (
    Shared(
        "layers",
        _option(
            str | None,
            callback=check_optional_depths,
            show_default=False,
            help="Depths L, comma-separated; several make a sweep. Default: "
            f"{AT_INIT.layers}; {TRAINING.layers} with --train (one depth only).",
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
            f"(docs/placement.md). Default: all; {','.join(TRAINING.layouts)} with --train.",
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
            help=f"Width d of the residual stream. Default: {AT_INIT.d_model}; "
            f"{TRAINING.d_model} with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "heads",
        _option(int, min=1, help="Attention heads; must divide --d-model."),
        (),
        default=DEFAULTS.heads,
    ),
    Shared(
        "mlp_ratio",
        _option(int, min=1, help="FFN hidden width / d: 1 as in the paper's analysis, 4 in GPT-2."),
        (),
        default=DEFAULTS.mlp_ratio,
    ),
    Shared(
        "norm",
        _option(NormKind, help="The norm in every position."),
        (),
        default=DEFAULTS.norm,
    ),
    Shared(
        "init",
        _option(
            Init,
            help="xavier: the paper's setting (Xavier-normal, no residual scaling); gpt2: "
            "N(0, 0.02) with residual projections scaled by 1/sqrt(2L), the control.",
        ),
        (),
        default=DEFAULTS.init,
    ),
    Shared(
        "seeds",
        _option(
            int | None,
            min=1,
            show_default=False,
            help=f"Models (and token batches) per configuration; intervals are over them. "
            f"Default: {AT_INIT.seeds}; {TRAINING.seeds} with --train.",
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
        "steps", _training(int, min=1, help="Optimizer steps per run."), (), default=TRAIN.steps
    ),
    Shared(
        "warmup",
        _training(
            int,
            min=0,
            help="Steps of linear warm-up; every run is also made without one (0: only without).",
        ),
        (),
        default=TRAIN.warmup,
    ),
    Shared(
        "lr",
        _training(
            str | None,
            "--lr",
            callback=check_rates,
            show_default=False,
            help="Peak learning rates, comma-separated. Default: "
            f"{','.join(f'{lr:g}' for lr in TRAIN.lrs)}.",
        ),
        (),
        default=None,
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
            help=f"Tokens per sequence. Default: {AT_INIT.seq_len}; {TRAINING.seq_len} with "
            "--train.",
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
            help="Sequences per seed (per step with --train). Default: "
            f"{AT_INIT.batch}; {TRAINING.batch} with --train.",
        ),
        (),
        default=None,
    ),
    Shared(
        "dropout",
        _training(float, min=0.0, max=MAX_DROPOUT, help="Dropout while training."),
        (),
        default=TRAIN.dropout,
    ),
    Shared(
        "eval_every",
        _training(int, min=1, help="Held-out loss every N steps."),
        (),
        default=TRAIN.eval_every,
    ),
    Shared(
        "stats_every",
        _training(int, min=1, help="The norms' input statistics every N steps."),
        (),
        default=TRAIN.stats_every,
    ),
    Shared(
        "train_map",
        _training(
            bool,
            "--map",
            help="Sample and fit each norm's map (x - c) / s at the start and the end of "
            'training, on the held-out windows (docs/metrics.md, "The norm\'s map").',
        ),
        (),
        default=TRAIN.maps,
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
        default=TRAIN.device,
    ),
)


def placement_config(given: Given) -> PlacementConfig:
    """The model and the data of either mode, the mode's defaults filled in by the library
    (PlacementConfig.for_mode), after the options of the other mode are refused."""
    depths = positive_ints(given.layers) if given.layers else None
    check_mode(
        given.train,
        depths or [],
        text=given.text,
        file=given.file,
        device=given.device,
        log_dir=given.log_dir,
        maps=given.train_map,
    )
    try:
        return PlacementConfig.for_mode(
            given.train,
            layers=depths,
            d_model=given.d_model,
            heads=given.heads,
            mlp_ratio=given.mlp_ratio,
            norm=given.norm,
            init=given.init,
            seeds=given.seeds,
            seq_len=given.seq_len,
            batch=given.batch,
            layouts=layout_names(given.placements) if given.placements else None,
            baseline=given.baseline,
        )
    except LninspectError as exc:
        raise typer.BadParameter(as_flags(str(exc))) from None


def train_config(given: Given) -> TrainConfig:
    """The training of --train: steps, warm-up, learning rates, schedule of measurements."""
    lrs = positive_floats(given.lr, "learning rate") if given.lr else TRAIN.lrs
    try:
        return TrainConfig(
            steps=given.steps,
            warmup=given.warmup,
            lrs=lrs,
            dropout=given.dropout,
            eval_every=given.eval_every,
            stats_every=given.stats_every,
            target_loss=given.target_loss,
            maps=given.train_map,
            device=given.device,
        )
    except LninspectError as exc:
        raise typer.BadParameter(as_flags(str(exc))) from None
