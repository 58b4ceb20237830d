"""Tables of `lninspect placement` results (no torch, no transformers).

Every number is a mean over the seeds with its 95% interval written `mean±half-width`
(lninspect.results.seeds); with one seed there is no interval and the mean stands alone.
"""

from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from lninspect.placement.layouts import FINAL, LAYOUTS
from lninspect.render.format import fmt
from lninspect.results.placement import PlacementConfig, PlacementResult, PlacementRun
from lninspect.results.placement_training import (
    TrainingResult,
    TrainRun,
    diverged_count,
    end_absmax,
    end_stream_var,
    map_ratio,
    mean_steps,
)
from lninspect.results.seeds import OverSeeds

POST_LEMMA2 = 1.5  # E|x|^2/d at a post-LN ln_2 input, Lemma 2
STACK_ABOVE = 4  # a table of more columns writes mean and ±half-width on two lines


def describe(config: PlacementConfig) -> str:
    """The model and input in one line: what every table and figure names."""
    norm = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}.get(config.norm, config.norm)
    depths = ",".join(str(n) for n in config.layers)
    tokens = {"random": "random tokens", "bytes": "text bytes", "text": "text tokens"}
    return (
        f"reference GPT, L={depths}, d={config.d_model}, {config.heads} heads, "
        f"FFN {config.mlp_ratio}×d ReLU, {norm} · init {config.init} · {seeds_text(config)} · "
        f"{config.batch}×{config.seq_len} {tokens.get(config.tokens, config.tokens)}"
    )


def seeds_text(config: PlacementConfig) -> str:
    return f"{config.seeds} seed{'s' if config.seeds != 1 else ''}"


def ci(value: OverSeeds, index: int | tuple[int, ...] = ()) -> str:
    """`0.0659±0.0031`: the mean and the half-width of its 95% interval (mean alone if none)."""
    mean, low, high = value.at(index)
    return _pm(mean, (high - low) / 2)


def _pm(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "—"  # no seed has a value (every run diverged before it)
    return fmt(mean) if not math.isfinite(half) else f"{fmt(mean)}±{half:.2g}"


def interval_caption(config: PlacementConfig) -> str:
    if config.seeds < 2:
        return "one seed: no interval (use --seeds 2 or more)"
    return f"mean±half-width of the 95% t interval over {seeds_text(config)}"


# Tables at initialization -------------------------------------------------------------------


def placement_report(result: PlacementResult) -> Group:
    """The layouts; per depth the gradient and stream tables; then the sweep if several."""
    header = Text(describe(result.config), style="bold")
    if result.training is not None:
        lines = [header, Text(describe_training(result), style="bold")]
        return Group(*lines, *(Padding(t, (1, 0, 0, 0)) for t in training_tables(result)))
    tables: list[Table] = [layouts_table(result.layouts())]
    for layers in sorted({run.layers for run in result.runs}):
        tables += [
            grads_table(result, layers),
            ratio_table(result, layers),
            *(other_grads_table(result, layers, key) for key in ("ffn_in", "attn_out")),
            stream_table(result, layers),
        ]
    if len(result.sweep) > 1:
        tables += [sweep_table(result), sweep_ratio_table(result)]
    return Group(header, *(Padding(table, (1, 0, 0, 0)) for table in tables))


def layouts_table(names: list[str]) -> Table:
    """Each layout run, in one line (its declaration's description)."""
    table = _table("Norm layouts", "lninspect.placement.layouts; docs/placement.md")
    table.add_column("layout", no_wrap=True)
    table.add_column("block and initialization")
    for name in names:
        table.add_row(LAYOUTS[name].label, LAYOUTS[name].description)
    return table


def _cell(value: OverSeeds, index: int | tuple[int, ...], stacked: bool) -> str:
    """`ci`, on two lines (mean over ±half-width) when the table has many columns."""
    text = ci(value, index)
    return text.replace("±", "\n±") if stacked else text


def _layer_table(
    title: str, caption: str, layers: int, columns: dict[str, OverSeeds], first: int = 0
) -> Table:
    """Rows l = first .. first + layers - 1, one column per entry of `columns`."""
    table = _table(title, caption)
    table.add_column("layer", justify="right", no_wrap=True)
    for header in columns:
        table.add_column(header, justify="right", no_wrap=True)
    stacked = len(columns) > STACK_ABOVE
    for i in range(layers):
        table.add_row(str(first + i), *(_cell(v, i, stacked) for v in columns.values()))
    return table


def _runs(result: PlacementResult, layers: int) -> dict[str, PlacementRun]:
    return {name: result.run(name, layers) for name in result.layouts()}


def _labels(result: PlacementResult) -> dict[str, str]:
    return {name: LAYOUTS[name].label for name in result.layouts()}


def grads_table(result: PlacementResult, layers: int) -> Table:
    """Per layer: the FFN output weight's gradient norm in every layout, and its trend."""
    runs, labels = _runs(result, layers), _labels(result)
    table = _layer_table(
        f"Gradient of W^(2,l), the FFN output, L={layers}",
        f"|dloss/dW|_F (Theorem 1's quantity); {interval_caption(result.config)}. Last rows: "
        f"block 0 / block {layers - 1}, and the least-squares slope of ln|dloss/dW| per block",
        layers,
        {labels[name]: run.grad_norm["ffn_out"] for name, run in runs.items()},
    )
    stacked = len(runs) > STACK_ABOVE
    table.add_section()
    for title, key in (("first/last", "first_over_last"), ("slope/layer", "slope")):
        table.add_row(title, *(_cell(getattr(run, key), (), stacked) for run in runs.values()))
    return table


def ratio_table(result: PlacementResult, layers: int) -> Table:
    """Per layer: each layout's FFN-output gradient over the baseline's, seed by seed."""
    runs, labels, base = _runs(result, layers), _labels(result), result.config.baseline
    grads = {name: run.grad_norm["ffn_out"].values for name, run in runs.items()}
    return _layer_table(
        f"W^(2,l)'s gradient over {labels[base]}'s, L={layers}",
        f"layout/{base} per seed (the same tokens and weight draws); "
        f"{interval_caption(result.config)}",
        layers,
        {
            f"{name}/{base}": OverSeeds.of(grads[name] / grads[base])
            for name in runs
            if name != base
        },
    )


def other_grads_table(result: PlacementResult, layers: int, key: str) -> Table:
    """Per layer: the gradient norm of the FFN input or attention output weight."""
    runs, labels = _runs(result, layers), _labels(result)
    what = {"ffn_in": "FFN input", "attn_out": "attention output"}[key]
    return _layer_table(
        f"Gradient of the {what} weight ({key}), L={layers}",
        "|dloss/dW|_F; the norms' gains (norm_weight) are in --json",
        layers,
        {labels[name]: run.grad_norm[key] for name, run in runs.items()},
    )


def stream_table(result: PlacementResult, layers: int) -> Table:
    """The residual stream's variance after block l, and its growth law per layout."""
    runs, labels = _runs(result, layers), _labels(result)
    present = {n: r for n, r in runs.items() if r.stream_var is not None}
    table = _layer_table(
        f"Variance of the residual stream by depth, L={layers}",
        "over d, mean over tokens; l = 0: the embeddings, l: after block l-1. Last rows, "
        "fitted per seed: the geometric law's rate (ln v per block), the linear law's slope, "
        "ln(RSS geometric / RSS linear) on v (< 0: geometric fits better) and the verdict "
        "(tie: the interval holds 0). Lemma 2 (pre-LN): 1 + l/2 … 1 + 3l/2",
        layers + 1,
        {labels[n]: r.stream_var for n, r in present.items() if r.stream_var is not None},
    )
    stacked = len(present) > STACK_ABOVE
    growth = [r.stream_growth for r in present.values() if r.stream_growth is not None]
    table.add_section()
    for title, key in (("rate", "rate"), ("slope", "slope"), ("ln RSS", "log_rss_ratio")):
        table.add_row(title, *(_cell(getattr(g, key), (), stacked) for g in growth))
    table.add_row("better", *(g.better() for g in growth))
    return table


def _table(title: str, caption: str) -> Table:
    """A table at least as wide as its title, so that the title is one line."""
    return Table(
        title=title,
        min_width=len(title),
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )


def sweep_table(result: PlacementResult) -> Table:
    """Per depth L: the last block's FFN-output gradient of every layout."""
    labels = _labels(result)
    table = _table(
        "Last block's FFN output weight against depth",
        f"|dloss/dW^(2,L)|_F; {interval_caption(result.config)}",
    )
    table.add_column("L", justify="right", no_wrap=True)
    for name in labels:
        table.add_column(labels[name], justify="right", no_wrap=True)
    stacked = len(labels) > STACK_ABOVE
    for row in result.sweep:
        table.add_row(str(row.layers), *(_cell(row.last[name], (), stacked) for name in labels))
    return table


def sweep_ratio_table(result: PlacementResult) -> Table:
    """Per depth L: each layout's last-block gradient over the baseline's, and its growth."""
    base, first = result.config.baseline, result.sweep[0].layers
    others = [name for name in result.layouts() if name != base]
    table = _table(
        f"Last block's gradient over {LAYOUTS[base].label}'s against depth",
        f"layout/{base} per seed; last row: the exponent of L it grows with over these depths "
        f"(Theorem 1's bounds give post/pre L^0.5: sqrt(L/{first}) × the ratio at L={first}); "
        f"{interval_caption(result.config)}",
    )
    table.add_column("L", justify="right", no_wrap=True)
    for name in others:
        table.add_column(f"{name}/{base}", justify="right", no_wrap=True)
    stacked = len(others) > STACK_ABOVE
    for row in result.sweep:
        table.add_row(str(row.layers), *(_cell(row.ratio[name], (), stacked) for name in others))
    table.add_section()
    exponents = result.growth_exponent
    table.add_row("L^", *(_cell(exponents[name], (), stacked) for name in others))
    return table


# Tables of --train -------------------------------------------------------------------------


def describe_training(result: PlacementResult) -> str:
    """The training setup in one line, for under the model's."""
    training = result.training
    assert training is not None
    c = training.config
    return (
        f"{c.steps} steps of {result.config.batch}×{result.config.seq_len} tokens of {c.text} · "
        f"{c.optimizer} · dropout {c.dropout:g} · {c.device}"
    )


def training_tables(result: PlacementResult) -> list[Table]:
    training = result.training
    assert training is not None
    maps = any(run.map_fit("alpha") is not None for run in training.runs)
    return [training_table(result, training)] + ([map_table(training)] if maps else [])


def map_table(training: TrainingResult) -> Table:
    """Per run that sampled its maps (--map): the tanh fit's error over the line's for the
    first norm of the first and the last block, and the final norm, at the start → the end."""
    table = _table(
        "The norm's map at the start → the end of training",
        "tanh error / line error of each norm's map (x - c) / s over the held-out windows, mean "
        "over the seeds: 1, a line fits as well; below 1, an S (docs/metrics.md); the first "
        "norm of the block (ln_1: before attention in pre-LN, after the sum in post-LN)",
    )
    headers = ("run", "warm-up", "lr", "block 1", "block L", "final norm")
    for header in headers:
        table.add_column(header, justify="right" if header != "run" else "left", no_wrap=True)
    for run in training.runs:
        first = LAYOUTS[run.layout].norm_keys()[0]
        ratio, final = map_ratio(run, first), map_ratio(run, FINAL)
        if ratio is None:
            continue
        table.add_row(
            LAYOUTS[run.layout].label,
            str(run.warmup) if run.warmup else "none",
            f"{run.lr:g}",
            _start_end(ratio[:, 0]),
            _start_end(ratio[:, -1]),
            "—" if final is None else _start_end(final[:, 0]),
        )
    return table


def _start_end(values: np.ndarray) -> str:
    return f"{fmt(float(values[0]))} → {fmt(float(values[-1]))}"


def training_table(result: PlacementResult, training: TrainingResult) -> Table:
    """Per run: final and best held-out loss, steps to the target loss, divergence."""
    seeds = result.config.seeds
    table = _table(
        "Training: the norm layouts, with and without warm-up",
        f"held-out loss in nats per token (step 0: {_start(training)}; the unigram "
        f"frequencies score {training.unigram_loss:.3g}); steps to reach "
        f"{training.target_loss:.3g} "
        f"(the target: {_target_why(training)}), mean over the seeds that did; "
        f"{interval_caption(result.config)}",
    )
    recorded = any(run.absmax is not None for run in training.runs)
    ends = ("stream var\nat the end", "max |x|\nat the end") if recorded else ()
    headers = ("run", "warm-up", "lr", "final", "best", *ends, "steps to\ntarget", "diverged")
    for header in headers:
        table.add_column(header, justify="right" if header != "run" else "left", no_wrap=True)
    for run in training.runs:
        assert run.final_held_out is not None and run.best_held_out is not None
        at_end = [_or_dash(end_stream_var(run)), _or_dash(end_absmax(run))] if recorded else []
        table.add_row(
            LAYOUTS[run.layout].label,
            str(run.warmup) if run.warmup else "none",
            f"{run.lr:g}",
            ci(run.final_held_out),
            ci(run.best_held_out),
            *at_end,
            _steps(run.steps_to_target, seeds),
            _diverged(run, seeds),
        )
    if recorded:
        last = int(training.runs[0].stats_steps[-1])
        table.caption = (
            f"{table.caption}; at the end: step {last}, the last recorded, the residual "
            "stream's variance after the last block and the largest |x| entering a norm that "
            "reads it"
        )
    return table


def _or_dash(value: OverSeeds | None) -> str:
    return "—" if value is None else ci(value)


def _start(training: TrainingResult) -> str:
    start = np.concatenate([run.held_out_loss[:, 0] for run in training.runs])
    return fmt(float(np.nanmean(start)))


def _target_why(training: TrainingResult) -> str:
    if training.config.target_loss is not None:
        return "--target-loss"
    return "10% of the way from the best run back to step 0"


def _steps(steps: list[int | None], seeds: int) -> str:
    reached = sum(s is not None for s in steps)
    if not reached:
        return "never"
    mean = mean_steps(steps)
    text = f"{mean:.0f}"
    return text if reached == seeds else f"{text} ({reached}/{seeds})"


def _diverged(run: TrainRun, seeds: int) -> str:
    count = diverged_count(run)
    if not count:
        return "no"
    at = ",".join(str(s) for s in run.diverged_at if s is not None)
    return f"{count}/{seeds} at {at}"
