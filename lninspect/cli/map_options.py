"""The options of the norm's map (lninspect.options.MapOptions; docs/metrics.md, "The norm's
map"): `--map`, `--map-size`, `--freeze-scale`, `--calibration-file`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

MAP = "The norm's map (docs/metrics.md)"
MapOpt = Annotated[
    bool,
    typer.Option(
        "--map",
        help="Sample each norm's map from input x to output before the gain, (x - c) / s: "
        "each token's largest |x| and a seeded uniform sample, --map-size pairs per norm; "
        "fit a line and A·tanh(αx) to it (Zhu et al. 2025).",
        rich_help_panel=MAP,
    ),
]
MapSizeOpt = Annotated[
    int,
    typer.Option(
        "--map-size",
        min=2,
        help="Pairs (x, output) kept per norm by --map: half each token's largest |x|, "
        "half uniform over every token and dimension.",
        rich_help_panel=MAP,
    ),
]
FreezeOpt = Annotated[
    bool,
    typer.Option(
        "--freeze-scale",
        help="What the norms' nonlinearity is worth: the LM loss with each norm's s frozen "
        "at constants from --calibration-file (one median, or the first token's and the "
        "rest's), norm by norm, per role and placement, and all at once, with its spread "
        "over other texts.",
        rich_help_panel=MAP,
    ),
]
CalibrationFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--calibration-file",
        help="The calibration texts of --freeze-scale, one per non-empty line; the first "
        "is the calibration, the others measure the spread (default: the bundled sample "
        "texts).",
        show_default=False,
        rich_help_panel=MAP,
    ),
]
