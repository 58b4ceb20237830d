"""The commands that inspect models on text: stats, norms, grads, report, compare.

Each parses its options into one typed request (lninspect.options, commands.Outputs) and
calls one function of lninspect.cli.commands through `invoke`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lninspect.cli.app import app, invoke
from lninspect.cli.options import (
    DEFAULT_OUT,
    AblateOpt,
    BatchSizeOpt,
    Bos,
    BosOpt,
    ChatTemplateOpt,
    DeviceMapOpt,
    DeviceOpt,
    DType,
    DTypeOpt,
    EncodingOpt,
    FieldOpt,
    FileOpt,
    FilesOpt,
    ForceOpt,
    JsonOpt,
    LayerFilterOpt,
    LinesOpt,
    Loss,
    LossOpt,
    MaxMemoryOpt,
    MaxSequencesOpt,
    MaxTokensOpt,
    ModelArg,
    OutOpt,
    PlotOpt,
    QuietOpt,
    ReductionsMode,
    ReductionsOpt,
    RevisionOpt,
    SeedOpt,
    SeqLenOpt,
    SpikeAbsOpt,
    SpikeRatioOpt,
    SpikeZOpt,
    StrideOpt,
    TargetOpt,
    TextOpt,
    TopKOpt,
    TrustOpt,
    WideOpt,
    check_target,
)
from lninspect.options import CorpusOptions, RunOptions, SpikeOptions, parse_layers


@app.command()
def stats(
    ctx: typer.Context,
    model: ModelArg = None,
    text: TextOpt = None,
    file: FilesOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    bos: BosOpt = Bos.auto,
    chat_template: ChatTemplateOpt = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    layers: LayerFilterOpt = None,
    stride: StrideOpt = None,
    lines: LinesOpt = False,
    field: FieldOpt = None,
    seq_len: SeqLenOpt = None,
    batch_size: BatchSizeOpt = None,
    max_sequences: MaxSequencesOpt = None,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    spikes: Annotated[
        bool,
        typer.Option(
            "--spikes",
            help="Also find activation spikes and measure whether each norm keeps "
            "their order (docs/metrics.md).",
            rich_help_panel="Spikes (docs/metrics.md)",
        ),
    ] = False,
    spike_abs: SpikeAbsOpt = 100.0,
    spike_ratio: SpikeRatioOpt = 1000.0,
    spike_z: SpikeZOpt = 6.0,
    top_k: TopKOpt = 8,
    ablate_spikes: AblateOpt = False,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    reductions: ReductionsOpt = ReductionsMode.auto,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
) -> None:
    """Per-token statistics of the input and output of every normalization module.

    Over a corpus (several --file, a glob, --lines, --field, --seq-len, ...): per-position
    statistics aggregated while streaming; under torchrun each process runs its share.
    """
    from lninspect.cli import commands

    corpus = CorpusOptions(
        files=tuple(file or ()),
        lines=lines,
        field=field,
        seq_len=seq_len,
        batch_size=batch_size,
        max_sequences=max_sequences,
        encoding=encoding,
    )
    run = RunOptions(
        model=model,
        text=text,
        file=Path(file[0]) if file and not corpus.requested else None,
        encoding=encoding,
        max_tokens=max_tokens,
        bos=bos.value,
        chat_template=chat_template,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
        seed=seed,
        layers=parse_layers(layers) if layers else None,
        stride=stride,
        device_map=device_map.value if device_map else None,
        max_memory=max_memory,
        reductions=reductions.value,
    )
    spike_options = (
        SpikeOptions(z=spike_z, magnitude=spike_abs, ratio=spike_ratio, top_k=top_k)
        if spikes or ablate_spikes
        else None
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet, wide)
    if corpus.requested:
        if ablate_spikes:
            raise typer.BadParameter(
                "applies to one text; a corpus is aggregated without keeping what the "
                "second and third runs would need",
                param_hint="'--ablate-spikes'",
            )
        invoke(
            ctx,
            commands.corpus_stats,
            run=run,
            corpus=corpus,
            spikes=spike_options,
            outputs=outputs,
        )
    else:
        invoke(
            ctx,
            commands.stats,
            run=run,
            spikes=spike_options,
            ablate=ablate_spikes,
            outputs=outputs,
        )


@app.command()
def norms(
    ctx: typer.Context,
    model: ModelArg = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
) -> None:
    """List the normalization modules found: kind, layer, role, eps and weight."""
    from lninspect.cli import commands

    run = RunOptions(
        model=model,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
    )
    outputs = commands.Outputs(json, None, force, quiet, wide)
    invoke(ctx, commands.norms, run=run, outputs=outputs)


@app.command()
def grads(
    ctx: typer.Context,
    model: ModelArg = None,
    text: TextOpt = None,
    file: FileOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    bos: BosOpt = Bos.auto,
    chat_template: ChatTemplateOpt = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    layers: LayerFilterOpt = None,
    stride: StrideOpt = None,
    loss: LossOpt = Loss.ce,
    target: TargetOpt = None,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    reductions: ReductionsOpt = ReductionsMode.auto,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
) -> None:
    """Gradient norms on both sides of every normalization module, per token and per layer."""
    from lninspect.cli import commands

    check_target(loss, target)
    run = RunOptions(
        model=model,
        text=text,
        file=file,
        encoding=encoding,
        max_tokens=max_tokens,
        bos=bos.value,
        chat_template=chat_template,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
        seed=seed,
        layers=parse_layers(layers) if layers else None,
        stride=stride,
        reductions=reductions.value,
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet, wide)
    invoke(ctx, commands.grads, run=run, loss=loss.value, target=target, outputs=outputs)


@app.command()
def report(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="The model (see `stats`); several (a revision as id@revision) make one page "
            "with them side by side and their comparison.",
            show_default=False,
        ),
    ] = None,
    text: TextOpt = None,
    file: FileOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    bos: BosOpt = Bos.auto,
    chat_template: ChatTemplateOpt = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    layers: LayerFilterOpt = None,
    stride: StrideOpt = None,
    loss: LossOpt = Loss.ce,
    target: TargetOpt = None,
    spike_abs: SpikeAbsOpt = 100.0,
    spike_ratio: SpikeRatioOpt = 1000.0,
    spike_z: SpikeZOpt = 6.0,
    top_k: TopKOpt = 8,
    ablate_spikes: AblateOpt = False,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Folder for the report: the PNGs, report.json and index.html."),
    ] = DEFAULT_OUT,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write into a non-empty --out, replacing files of the same names."
        ),
    ] = False,
    reductions: ReductionsOpt = ReductionsMode.auto,
    quiet: QuietOpt = False,
) -> None:
    """Stats, spikes and gradients in one run: every figure, the JSON and an index.html.

    Several models: each one's figures side by side on one page, with their comparison
    (as `lninspect compare`; the loss is then next-token cross-entropy).
    """
    from lninspect.cli import commands

    check_target(loss, target)
    if models and len(models) > 1 and (loss != Loss.ce or revision):
        raise typer.BadParameter(
            "several models take neither --loss target nor --revision (write id@revision)"
        )
    run = RunOptions(
        model=models[0] if models else None,
        text=text,
        file=file,
        encoding=encoding,
        max_tokens=max_tokens,
        bos=bos.value,
        chat_template=chat_template,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
        seed=seed,
        reductions=reductions.value,
        layers=parse_layers(layers) if layers else None,
        stride=stride,
    )
    if models and len(models) > 1:
        invoke(
            ctx,
            commands.compare_report,
            models=list(models),
            run=run,
            spikes=SpikeOptions(z=spike_z, magnitude=spike_abs, ratio=spike_ratio, top_k=top_k),
            folder=out_dir,
            force=force,
            quiet=quiet,
        )
        return
    invoke(
        ctx,
        commands.report,
        run=run,
        loss=loss.value,
        target=target,
        spikes=SpikeOptions(z=spike_z, magnitude=spike_abs, ratio=spike_ratio, top_k=top_k),
        ablate=ablate_spikes,
        folder=out_dir,
        force=force,
        quiet=quiet,
    )


@app.command()
def compare(
    ctx: typer.Context,
    models: Annotated[
        list[str],
        typer.Argument(
            help="Two or more models: hub ids (a revision as id@revision), local "
            "directories, random:ARCH or tiny. The first is the reference, A.",
            show_default=False,
        ),
    ],
    text: TextOpt = None,
    file: FileOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    bos: BosOpt = Bos.auto,
    chat_template: ChatTemplateOpt = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    spike_z: SpikeZOpt = 6.0,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Several models or checkpoints on one text: norm by norm, their largest differences.

    With the same tokenizer the models are compared token by token on the same tokens;
    otherwise per layer, norms matched by role and relative depth (the output says which).
    """
    from lninspect.cli import commands

    if len(models) < 2:
        raise typer.BadParameter("give at least two models to compare", param_hint="'MODELS'")
    run = RunOptions(
        text=text,
        file=file,
        encoding=encoding,
        max_tokens=max_tokens,
        bos=bos.value,
        chat_template=chat_template,
        device=device,
        dtype=dtype.value,
        trust_remote_code=trust_remote_code,
        seed=seed,
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet)
    invoke(
        ctx,
        commands.compare,
        models=list(models),
        run=run,
        spikes=SpikeOptions(z=spike_z),
        outputs=outputs,
    )
