"""The commands that inspect models on text: stats, norms, grads, report, compare.

Each takes its shared options from lninspect.cli.shared (declared once there), builds its
typed requests with `given`, and calls one function of lninspect.cli.commands through
`invoke`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lninspect.cli.app import app, invoke
from lninspect.cli.options import (
    DEFAULT_OUT,
    SPIKES_PANEL,
    LossOpt,
    ModelArg,
    TargetOpt,
    check_loss_target,
    folder_name,
)
from lninspect.cli.shared import (
    ABLATE,
    CORPUS,
    FIGURES,
    JSON,
    MODEL,
    NORM_MAP,
    ONE_FILE,
    PRINTED,
    QUIET,
    SPIKES,
    TEXT,
    WIDE,
    Given,
    shared,
)

SpikesFlag = Annotated[
    bool,
    typer.Option(
        "--spikes",
        help="Also find activation spikes and measure whether each norm keeps "
        "their order (docs/metrics.md).",
        rich_help_panel=SPIKES_PANEL,
    ),
]
ModelsArg = Annotated[
    list[str],
    typer.Argument(
        help="Two or more models: hub ids (a revision as id@revision), local "
        "directories, random:ARCH or tiny. The first is the reference, A.",
        show_default=False,
    ),
]
ReportModelsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="The model (see `stats`); several (a revision as id@revision) make one page "
        "with them side by side and their comparison.",
        show_default=False,
    ),
]
ReportOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        parser=folder_name,
        metavar="<path>",
        help="Folder for the report: the PNGs, report.json and index.html.",
    ),
]
ReportForceOpt = Annotated[
    bool,
    typer.Option(
        "--force", help="Write into a non-empty --out, replacing files of the same names."
    ),
]


@app.command()
@shared(TEXT, CORPUS, MODEL, SPIKES, ABLATE, NORM_MAP, FIGURES, PRINTED)
def stats(
    ctx: typer.Context, model: ModelArg = None, spikes: SpikesFlag = False, *, given: Given
) -> None:
    """Per-token statistics of the input and output of every normalization module.

    Over a corpus (several --file, a glob, --lines, --field, --seq-len, ...): per-position
    statistics aggregated while streaming; under torchrun each process runs its share.
    """
    from lninspect.cli import commands

    corpus, ablate = given.corpus(), ablation_asked(given)
    one_file = Path(corpus.files[0]) if corpus.files and not corpus.requested else None
    request = {
        "run": given.run(model=model, file=one_file),
        "spikes": given.spikes() if spikes or ablate else None,
        "outputs": given.outputs(),
    }
    maps = given.maps()
    if not corpus.requested:
        invoke(ctx, commands.stats, ablate=ablate, maps=maps, **request)
        return
    if maps.freeze:
        raise typer.BadParameter(
            "applies to one text: a corpus is aggregated without keeping the texts that "
            "each frozen configuration would run again",
            param_hint="'--freeze-scale'",
        )
    if ablate:
        raise typer.BadParameter(
            "applies to one text; a corpus is aggregated without keeping what the "
            "second and third runs would need",
            param_hint="'--ablate-spikes'",
        )
    invoke(ctx, commands.corpus_stats, corpus=corpus, maps=maps, **request)


def ablation_asked(given: Given) -> bool:
    """--ablate-spikes; its choices (--ablate-dims, --ablate-layer) only with it."""
    if not given.ablate_spikes:
        for name in ("ablate_dims", "ablate_layer"):
            if getattr(given, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise typer.BadParameter(
                    "chooses what --ablate-spikes sets: add --ablate-spikes", param_hint=f"'{flag}'"
                )
    return bool(given.ablate_spikes)


@app.command()
@shared(MODEL, PRINTED)
def norms(ctx: typer.Context, model: ModelArg = None, *, given: Given) -> None:
    """List the normalization modules found: kind, layer, role, eps and weight."""
    from lninspect.cli import commands

    invoke(ctx, commands.norms, run=given.run(model=model), outputs=given.outputs())


@app.command()
@shared(TEXT, ONE_FILE, MODEL, FIGURES, PRINTED)
def grads(
    ctx: typer.Context,
    model: ModelArg = None,
    loss: LossOpt = "ce",
    target: TargetOpt = None,
    *,
    given: Given,
) -> None:
    """Gradient norms on both sides of every normalization module, per token and per layer."""
    from lninspect.cli import commands

    check_loss_target(loss, target)
    run, outputs = given.run(model=model), given.outputs()
    invoke(ctx, commands.grads, run=run, loss=loss, target=target, outputs=outputs)


@app.command()
@shared(TEXT, ONE_FILE, MODEL, SPIKES, ABLATE, NORM_MAP, JSON, QUIET, WIDE)
def report(
    ctx: typer.Context,
    models: ReportModelsArg = None,
    loss: LossOpt = "ce",
    target: TargetOpt = None,
    out_dir: ReportOutOpt = DEFAULT_OUT,
    force: ReportForceOpt = False,
    *,
    given: Given,
) -> None:
    """Stats, spikes and gradients in one run: every figure, the JSON and an index.html.

    Several models: each one's figures side by side on one page, with their comparison
    (as `lninspect compare`; the loss is then next-token cross-entropy).
    """
    from lninspect.cli import commands

    check_loss_target(loss, target)
    several = bool(models and len(models) > 1)
    if several and (loss != "ce" or given.revision):
        raise typer.BadParameter(
            "several models take neither --loss target nor --revision (write id@revision)"
        )
    run = given.run(model=models[0] if models else None)
    request = {
        "run": run,
        "spikes": given.spikes(),
        "folder": out_dir,
        "outputs": given.outputs(force=force),
    }
    if several:
        invoke(ctx, commands.compare_report, models=list(models or ()), **request)
        return
    ablate = ablation_asked(given)
    maps = given.maps()
    invoke(ctx, commands.report, loss=loss, target=target, ablate=ablate, maps=maps, **request)


@app.command()
@shared(TEXT, ONE_FILE, MODEL, SPIKES, FIGURES, PRINTED)
def compare(ctx: typer.Context, models: ModelsArg, *, given: Given) -> None:
    """Several models or checkpoints on one text: norm by norm, their largest differences.

    With the same tokenizer the models are compared token by token on the same tokens;
    otherwise per layer, norms matched by role and relative depth (the output says which).
    --revision is the revision of the models given without one (id@revision).
    """
    from lninspect.cli import commands

    if len(models) < 2:
        raise typer.BadParameter("give at least two models to compare", param_hint="'MODELS'")
    run, spikes, outputs = given.run(), given.spikes(), given.outputs()
    invoke(ctx, commands.compare, models=list(models), run=run, spikes=spikes, outputs=outputs)
