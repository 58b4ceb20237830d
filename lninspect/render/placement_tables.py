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

from lninspect.render.format import fmt
from lninspect.results.placement import PlacementConfig, PlacementResult
from lninspect.results.placement_training import (
    TrainingResult,
    TrainRun,
    diverged_count,
    mean_steps,
)
from lninspect.results.seeds import OverSeeds

POST_LEMMA2 = 1.5  # E|x|^2/d at a post-LN ln_2 input, Lemma 2


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
    """Per depth: the gradient tables and the norm-input table; then the sweep if several."""
    header = Text(describe(result.config), style="bold")
    if result.training is not None:
        lines = [header, Text(describe_training(result), style="bold")]
        return Group(*lines, *(Padding(t, (1, 0, 0, 0)) for t in training_tables(result)))
    tables: list[Table] = []
    for layers in sorted({run.layers for run in result.runs}):
        tables += [
            grads_table(result, layers),
            other_grads_table(result, layers),
            inputs_table(result, layers),
        ]
    if len(result.sweep) > 1:
        tables.append(sweep_table(result))
    return Group(header, *(Padding(table, (1, 0, 0, 0)) for table in tables))


def grads_table(result: PlacementResult, layers: int) -> Table:
    """Per layer: the FFN output weight's gradient norm, pre- and post-LN, and their ratio."""
    pre, post = result.run("pre", layers), result.run("post", layers)
    table = _table(
        f"Gradient of W^(2,l), the FFN output, L={layers}",
        f"|dloss/dW|_F (Theorem 1's quantity); post/pre per seed; "
        f"{interval_caption(result.config)}. Last rows: block 0 / block {layers - 1}, and the "
        "least-squares slope of ln|dloss/dW| per block",
    )
    for header in ("layer", "pre-LN", "post-LN", "post/pre"):
        table.add_column(header, justify="right", no_wrap=True)
    ratio = OverSeeds.of(post.grad_norm["ffn_out"].values / pre.grad_norm["ffn_out"].values)
    for i in range(layers):
        table.add_row(
            str(i), ci(pre.grad_norm["ffn_out"], i), ci(post.grad_norm["ffn_out"], i), ci(ratio, i)
        )
    table.add_section()
    table.add_row("first/last", ci(pre.first_over_last), ci(post.first_over_last), "")
    table.add_row("slope/layer", ci(pre.slope), ci(post.slope), "")
    return table


def other_grads_table(result: PlacementResult, layers: int) -> Table:
    """Per layer: the gradient norms of the FFN input and attention output weights."""
    pre, post = result.run("pre", layers), result.run("post", layers)
    table = _table(
        f"Other weights' gradient norms at initialization, L={layers}",
        "|dloss/dW|_F; the norms' gains (norm_weight) are in --json",
    )
    table.add_column("layer", justify="right", no_wrap=True)
    for header in ("ffn_in\npre", "\npost", "attn_out\npre", "\npost"):
        table.add_column(header, justify="right", no_wrap=True)
    for i in range(layers):
        cells = [ci(run.grad_norm[key], i) for key in ("ffn_in", "attn_out") for run in (pre, post)]
        table.add_row(str(i), *cells)
    return table


def inputs_table(result: PlacementResult, layers: int) -> Table:
    """Per layer: E|x|^2/d at every norm's input, next to Lemma 2's values."""
    pre, post = result.run("pre", layers), result.run("post", layers)
    table = _table(
        f"E|x|²/d at the norms' inputs, L={layers}",
        "pre-LN ln_1 sees the residual stream after l blocks; post-LN ln_2 the sum "
        "after the FFN, renormalised in every block",
    )
    table.add_column("layer", justify="right", no_wrap=True)
    for header in ("pre\nln_1", "\nln_2", "Lemma 2\npre ln_1", "post\nln_1", "\nln_2"):
        table.add_column(header, justify="right", no_wrap=True)
    for i in range(layers):
        pre_cells = [ci(pre.input_ms[key], i) for key in ("ln_1", "ln_2")]
        post_cells = [ci(post.input_ms[key], i) for key in ("ln_1", "ln_2")]
        table.add_row(str(i), *pre_cells, _lemma2_pre(i), *post_cells)
    if len(pre.input_ms["ln_f"].mean):
        table.add_row("ln_f", ci(pre.input_ms["ln_f"], 0), "", _lemma2_pre(layers), "—", "—")
    table.add_section()
    table.add_row("Lemma 2", "", "", "", "", fmt(POST_LEMMA2))
    return table


def _lemma2_pre(blocks: int) -> str:
    """Lemma 2's range of E|x|^2/d after `blocks` pre-LN blocks: 1 + l/2 … 1 + 3l/2."""
    return f"{fmt(1 + blocks / 2)} … {fmt(1 + 1.5 * blocks)}"


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
    """Per depth L: the last block's FFN-output gradient, post/pre, and the sqrt(L) law."""
    rows, first = result.sweep, result.sweep[0].layers
    exponent = result.growth_exponent
    law = "" if exponent is None else f"post/pre grows as L^({ci(exponent)}) over these depths; "
    table = _table(
        "Last block's FFN output weight against depth",
        f"{law}Theorem 1's bounds give L^0.5; the last column is sqrt(L/{first}) × the ratio "
        f"at L={first}; {interval_caption(result.config)}",
    )
    for header in ("L", "pre", "post", "post/pre", f"sqrt(L/{first})×ratio"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(str(row.layers), ci(row.pre), ci(row.post), ci(row.ratio), ci(row.expected))
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
    return [training_table(result, training)]


def training_table(result: PlacementResult, training: TrainingResult) -> Table:
    """Per run: final and best held-out loss, steps to the target loss, divergence."""
    seeds = result.config.seeds
    table = _table(
        "Training: pre-LN vs post-LN, with and without warm-up",
        f"held-out loss in nats per token (step 0: {_start(training)}; the unigram "
        f"frequencies score {training.unigram_loss:.3g}); steps to reach "
        f"{training.target_loss:.3g} "
        f"(the target: {_target_why(training)}), mean over the seeds that did; "
        f"{interval_caption(result.config)}",
    )
    for header in ("run", "warm-up", "lr", "final", "best", "steps to\ntarget", "diverged"):
        table.add_column(header, justify="right" if header != "run" else "left", no_wrap=True)
    for run in training.runs:
        assert run.final_held_out is not None and run.best_held_out is not None
        table.add_row(
            f"{run.placement}-LN",
            str(run.warmup) if run.warmup else "none",
            f"{run.lr:g}",
            ci(run.final_held_out),
            ci(run.best_held_out),
            _steps(run.steps_to_target, seeds),
            _diverged(run, seeds),
        )
    return table


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
