"""The options the commands share, as Typer `Annotated` aliases, and their checks.

Checks here are the cheap ones (syntax, ranges) that run while the command line is parsed,
before anything is loaded. Imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from lninspect.cli.flags import as_flags
from lninspect.errors import LninspectError
from lninspect.options import (
    MAX_DIM,
    MAX_LAYER,
    Bos,
    DeviceMap,
    DType,
    Loss,
    Reductions,
    is_device_name,
    parse_indices,
)


def check_device(value: str) -> str:
    if not is_device_name(value):
        raise typer.BadParameter(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value


ModelArg = Annotated[
    str | None,
    typer.Argument(
        help="Hub id (gpt2), local model directory, a .gguf file (dequantized; needs the "
        "gguf extra), random:ARCH (random weights) or tiny (bundled). Default: gpt2 if "
        "cached, else the bundled model.",
        show_default=False,
    ),
]
TextOpt = Annotated[
    str | None,
    typer.Option(
        "--text", "-t", help="Text to analyse (default: a built-in sample).", show_default=False
    ),
]
FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Read the text from this file.", show_default=False),
]
EncodingOpt = Annotated[str, typer.Option(help="Encoding of --file.")]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Keep at most this many tokens (default: the model's context).",
        show_default=False,
    ),
]


BosOpt = Annotated[
    Bos,
    typer.Option(
        "--bos",
        help="A BOS token first: auto (as the tokenizer does), yes (added when missing), "
        "no (removed).",
    ),
]
ChatTemplateOpt = Annotated[
    bool,
    typer.Option(
        "--chat-template",
        help="Wrap the text as a user turn of the tokenizer's chat template (instruct models).",
    ),
]
DeviceOpt = Annotated[
    str, typer.Option(callback=check_device, help="auto, cpu, cuda, cuda:N or mps.")
]
DTypeOpt = Annotated[
    DType, typer.Option(help="Model dtype; statistics are always computed in float32.")
]
GgufFileOpt = Annotated[
    str | None,
    typer.Option(
        "--gguf-file",
        help="A GGUF file inside the folder MODEL (MODEL may also be the .gguf file itself).",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option(help="Hub revision (branch, tag or commit).", show_default=False)
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Allow a hub model's own Python code to run (off by default)."
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Seed for random: weights.")]
JsonOpt = Annotated[
    str | None,
    typer.Option(
        "--json",
        help="Write the results as JSON to this file ('-' for stdout).",
        show_default=False,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


def _index_list(noun: str, limit: int) -> Callable[[str | None], str | None]:
    """A parse-time check of a list of layers or dimensions (`0,3,8-11`), kept as written."""

    def check(value: str | None) -> str | None:
        if value is not None:
            try:
                parse_indices(value, noun, limit)
            except ValueError as exc:
                raise typer.BadParameter(as_flags(str(exc))) from None
        return value

    return check


LayerFilterOpt = Annotated[
    str | None,
    typer.Option(
        "--layers",
        callback=_index_list("layer", MAX_LAYER),
        help="Only the norms of these layers, e.g. 0,3,11 "
        "or 0-5 (from 0); the norms outside the blocks (final, embedding) are then left out.",
        show_default=False,
    ),
]
StrideOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Cover the whole text: windows of --max-tokens tokens (default: the model's "
        "context), one every N tokens, each a sequence of its own.",
        show_default=False,
    ),
]


def _check_positive(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"{value} is not a positive number")
    return value


SPIKES_PANEL = "Spikes (docs/metrics.md)"
SpikeZOpt = Annotated[
    float,
    typer.Option(
        callback=_check_positive,
        help="The z rule: a dimension with |z| >= this is a spike. |z| can never exceed "
        "sqrt(d - 1) (LayerNorm) or sqrt(d) (RMSNorm): at d <= 37 the default cannot fire.",
        rich_help_panel=SPIKES_PANEL,
    ),
]
SpikeAbsOpt = Annotated[
    float,
    typer.Option(
        callback=_check_positive,
        help="The magnitude rule (Sun et al.'s massive activations): |x| above this and "
        "above --spike-ratio x the median |x| of the layer. Small models need less (the "
        "bundled tiny's largest |x| is about 47).",
        rich_help_panel=SPIKES_PANEL,
    ),
]
SpikeRatioOpt = Annotated[
    float,
    typer.Option(
        callback=_check_positive,
        help="The magnitude rule: |x| above this many times the median |x| over every "
        "token and dimension of the module's input in the sequence.",
        rich_help_panel=SPIKES_PANEL,
    ),
]
AblateOpt = Annotated[
    bool,
    typer.Option(
        "--ablate-spikes",
        help="Do the massive activations matter? Set them, at the first layer whose input "
        "has them, to their mean over other texts (--ablate-file, else the bundled sample "
        "texts), then to zero, and report both changes of the LM loss with their spread "
        "over those texts (Sun et al. 2024).",
        rich_help_panel=SPIKES_PANEL,
    ),
]
AblateFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--ablate-file",
        help="The other texts of --ablate-spikes, one per non-empty line (default: the "
        "bundled sample texts).",
        show_default=False,
        rich_help_panel=SPIKES_PANEL,
    ),
]


AblateDimsOpt = Annotated[
    str | None,
    typer.Option(
        "--ablate-dims",
        callback=_index_list("dimension", MAX_DIM),
        help="--ablate-spikes only these hidden dimensions, e.g. 163,400 (default: every "
        "dimension with a massive activation at that layer).",
        show_default=False,
        rich_help_panel=SPIKES_PANEL,
    ),
]
AblateLayerOpt = Annotated[
    int | None,
    typer.Option(
        "--ablate-layer",
        min=0,
        help="--ablate-spikes at this layer's input (default: the first layer whose input "
        "has a massive activation).",
        show_default=False,
        rich_help_panel=SPIKES_PANEL,
    ),
]
TopKOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="k of the secondary top-k retention column (all dimensions, not only spikes).",
        rich_help_panel=SPIKES_PANEL,
    ),
]
DEFAULT_OUT = Path("lninspect-report")
PlotOpt = Annotated[bool, typer.Option("--plot", help="Draw the figures as PNGs into --out.")]


def folder_name(value: str | Path) -> Path:
    """A folder option's value as a Path; '' is refused (Path('') would be the current folder)."""
    if isinstance(value, str) and not value.strip():
        raise typer.BadParameter("the folder name is empty: give a folder")
    return Path(value)


OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        parser=folder_name,
        metavar="<path>",
        help=f"Folder for the PNGs of --plot [default: {DEFAULT_OUT}].",
        show_default=False,
    ),
]


def figures_folder(plot: bool, out_dir: Path | None) -> Path | None:
    """Where --plot's PNGs go (None: no figures); --out without --plot is refused, since a
    run that draws nothing into the folder named is not what was asked for."""
    if plot:
        return out_dir or DEFAULT_OUT
    if out_dir is not None:
        raise typer.BadParameter(
            f"'{out_dir}' is the folder of --plot's figures: add --plot, or drop --out",
            param_hint="'--out'",
        )
    return None


WideOpt = Annotated[
    bool,
    typer.Option("--wide", help="Tables with every column (the default ones fit 80 columns)."),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print nothing but errors (and JSON asked for with --json -)."
    ),
]
# For the commands that have no --json (run):
QuietNoJsonOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
AllJumpsOpt = Annotated[
    bool,
    typer.Option("--all", help="Every jump in the jumps table (the default: the largest 12)."),
]


def _check_max_memory(value: str | None) -> str | None:
    from lninspect.model.device_map import parse_max_memory

    try:
        parse_max_memory(value)
    except LninspectError as exc:
        raise typer.BadParameter(as_flags(str(exc))) from None
    return value


CORPUS_PANEL = "Corpus (docs/corpus.md)"
FilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--file",
        "-f",
        help="Read the text from this file. Repeat it, or give a quoted glob "
        "('data/*.txt'), for a corpus.",
        show_default=False,
    ),
]
LinesOpt = Annotated[
    bool,
    typer.Option(
        "--lines", help="Corpus: one document per non-empty line.", rich_help_panel=CORPUS_PANEL
    ),
]
FieldOpt = Annotated[
    str | None,
    typer.Option(
        help="Corpus of JSONL files: the document is this field of each line, e.g. text.",
        show_default=False,
        rich_help_panel=CORPUS_PANEL,
    ),
]
SeqLenOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Corpus: tokens per sequence (default: the model's context, at most 1024).",
        show_default=False,
        rich_help_panel=CORPUS_PANEL,
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Corpus: sequences per forward pass (default: 8).",
        show_default=False,
        rich_help_panel=CORPUS_PANEL,
    ),
]
MaxSequencesOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Corpus: stop after this many sequences (over all torchrun processes).",
        show_default=False,
        rich_help_panel=CORPUS_PANEL,
    ),
]
NormClassOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--norm-class",
        help="Also hook the modules of this class as norms (a class of the model's own, "
        "e.g. ScaleNorm; repeat it for several). Modules that look like norms but are not "
        "hooked are named in a note.",
        show_default=False,
    ),
]
DeviceMapOpt = Annotated[
    DeviceMap | None,
    typer.Option(
        help="Spread the model's layers over the devices with accelerate (replaces --device).",
        show_default=False,
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        callback=_check_max_memory,
        help="With --device-map: memory per device, e.g. cuda:0=20GiB,cuda:1=20GiB,cpu=64GiB.",
        show_default=False,
    ),
]


ReductionsOpt = Annotated[
    Reductions,
    typer.Option(
        "--reductions",
        help="Per-token reductions: compiled (one fused pass per norm, torch.compile), eager, "
        "or auto (compiled on CUDA, eager elsewhere).",
    ),
]


def check_loss_target(loss: Loss, target: str | None) -> None:
    """--loss target needs --target (checked before anything loads)."""
    if loss == "target" and not target:
        raise typer.BadParameter("--loss target needs --target TOKEN", param_hint="'--target'")


LossOpt = Annotated[
    Loss,
    typer.Option(
        help="ce: mean next-token cross-entropy of the text; target: -log p(--target) "
        "at the last position."
    ),
]
TargetOpt = Annotated[
    str | None, typer.Option(help="The token scored by --loss target.", show_default=False)
]


def positive_ints(value: str) -> list[int]:
    """`6,12,24` -> [6, 12, 24], sorted and without repeats; BadParameter otherwise."""
    return _positive(value, int, "integers", "depth must be at least 1")


def positive_floats(value: str, noun: str) -> list[float]:
    """`1e-3,3e-3` -> [0.001, 0.003], sorted and without repeats; BadParameter otherwise."""
    return _positive(value, float, "numbers", f"{noun} must be a positive number")


N = TypeVar("N", int, float)


def _positive(value: str, kind: Callable[[str], N], plural: str, rule: str) -> list[N]:
    try:
        numbers = sorted({kind(v) for v in value.split(",")})
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of {plural}") from None
    if not all(0 < n < float("inf") for n in numbers):
        raise typer.BadParameter(f"'{value}': every {rule}")
    return numbers
