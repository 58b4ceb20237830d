"""Tables of `lninspect placement` results (no torch, no transformers)."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.padding import Padding
from rich.table import Table

from lninspect.render.format import fmt
from lninspect.results.placement import PlacementConfig, PlacementResult, growth_exponent

POST_LEMMA2 = 1.5  # E|x|^2/d at a post-LN ln_2 input, Lemma 2


def describe(config: PlacementConfig) -> str:
    """The model and input in one line: what every table and figure names."""
    norm = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}.get(config.norm, config.norm)
    depths = ",".join(str(n) for n in config.layers)
    tokens = "random tokens" if config.tokens == "random" else "text bytes"
    return (
        f"reference GPT, L={depths}, d={config.d_model}, {config.heads} heads, "
        f"FFN {config.mlp_ratio}×d ReLU, {norm} · init {config.init} · {_seeds(config)} · "
        f"{config.batch}×{config.seq_len} {tokens}"
    )


def _seeds(config: PlacementConfig) -> str:
    return f"{config.seeds} seed{'s' if config.seeds != 1 else ''}"


# Tables -------------------------------------------------------------------------------------


def placement_report(result: PlacementResult) -> Group:
    """Per depth: a gradient table and a norm-input table; then the sweep table if several."""
    tables: list[Table] = []
    for layers in sorted({run.layers for run in result.runs}):
        tables += [grads_table(result, layers), inputs_table(result, layers)]
    if len(tables) > 2:
        tables.append(sweep_table(result))
    return Group(*(Padding(table, (0, 0, 1, 0)) for table in tables))


def grads_table(result: PlacementResult, layers: int) -> Table:
    """Per layer: the gradient norms of pre- and post-LN side by side."""
    pre, post = result.run("pre", layers), result.run("post", layers)
    table = _table(
        f"Gradient norms at initialization, L={layers} · {describe(result.config)}",
        f"|dloss/dW|_F, mean over {_seeds(result.config)} (spread in --json); "
        "ffn_out is W^{2,l} of Theorem 1; norm w: ln_1 and ln_2 gains together",
    )
    table.add_column("layer", justify="right", no_wrap=True)
    for header in (
        "ffn_out\npre",
        "\npost",
        "\nratio",
        "ffn_in\npre",
        "\npost",
        "attn_out\npre",
        "\npost",
        "norm w\npre",
        "\npost",
    ):
        table.add_column(header, justify="right", no_wrap=True)
    for i in range(layers):
        ratio = post.grad_norm["ffn_out"][i] / pre.grad_norm["ffn_out"][i]
        cells = [
            fmt(run.grad_norm[key][i])
            for key in ("ffn_in", "attn_out", "norm_weight")
            for run in (pre, post)
        ]
        table.add_row(
            str(i),
            fmt(pre.grad_norm["ffn_out"][i]),
            fmt(post.grad_norm["ffn_out"][i]),
            fmt(ratio),
            *cells,
        )
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
    for header in (
        "pre\nln_1",
        "\nln_2",
        "Lemma 2\npre ln_1",
        "post\nln_1",
        "\nln_2",
        "Lemma 2\npost ln_2",
    ):
        table.add_column(header, justify="right", no_wrap=True)
    for i in range(layers):
        pre_cells = [fmt(pre.input_ms[key][i]) for key in ("ln_1", "ln_2")]
        post_cells = [fmt(post.input_ms[key][i]) for key in ("ln_1", "ln_2")]
        table.add_row(str(i), *pre_cells, _lemma2_pre(i), *post_cells, fmt(POST_LEMMA2))
    if len(pre.input_ms["ln_f"]):
        table.add_row("ln_f", fmt(pre.input_ms["ln_f"][0]), "", _lemma2_pre(layers), "—", "—", "")
    return table


def _lemma2_pre(blocks: int) -> str:
    """Lemma 2's range of E|x|^2/d after `blocks` pre-LN blocks: 1 + l/2 … 1 + 3l/2."""
    return f"{fmt(1 + blocks / 2)} … {fmt(1 + 1.5 * blocks)}"


def _table(title: str, caption: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )


def sweep_table(result: PlacementResult) -> Table:
    """Per depth L: the last block's FFN-output gradient, post/pre, and the sqrt(L) law."""
    rows = result.sweep()
    exponent = growth_exponent(rows)
    table = _table(
        "Last block's FFN output weight against depth",
        f"post/pre grows as L^{exponent:.2f} over these depths; Theorem 1 predicts "
        f"L^0.5: the last column is sqrt(L/{rows[0].layers}) × the ratio at "
        f"L={rows[0].layers}",
    )
    for header in ("L", "pre", "post", "post/pre", f"sqrt(L/{rows[0].layers}) × ratio"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row.layers), fmt(row.pre), fmt(row.post), fmt(row.ratio), fmt(row.expected)
        )
    return table
