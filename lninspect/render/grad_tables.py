"""Rich tables of gradient results: per norm module and per layer of parameters."""

from __future__ import annotations

import numpy as np
from rich import box
from rich.table import Table

from lninspect.render.format import fmt, header, short_names
from lninspect.results import GradsResult
from lninspect.summary import group_norms, nan_quantiles, with_grads

GROUPS = (
    "embed",
    "attn_in",
    "attn_out",
    "mlp_in",
    "mlp_out",
    "norm_weight",
    "norm_bias",
    "head",
    "other",
)


def grads_table(result: GradsResult) -> Table:
    """One row per norm: median and max over tokens of |dL/dy|, |dL/dx| through it, residual."""
    table = Table(
        title=f"{header(result)} · loss {fmt(result.loss)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        caption=(
            f"loss: {result.loss_kind}. |dL/dy|: gradient at the norm's output; "
            "|dL/dx|: through the norm to its input; residual: |dL/dx| in total "
            "(every use of x); scale = |dL/dx| / |dL/dy|. Median / max over tokens."
        ),
    )
    for column in (
        "module",
        "role",
        "|dL/dy| med / max",
        "|dL/dx| med / max",
        "residual med / max",
        "scale med",
    ):
        table.add_column(
            column, justify="left" if column in ("module", "role") else "right", no_wrap=True
        )
    pairs = with_grads(result)
    names = short_names([n.name for n, _ in pairs])
    for name, (norm, grad) in zip(names, pairs, strict=True):
        cells = [_med_max(v) for v in (grad.output_norm, grad.input_norm, grad.residual_norm)]
        table.add_row(name, norm.role, *cells, fmt(nan_quantiles(grad.scale, (0.5,))[0]))
    return table


def layer_grads_table(result: GradsResult) -> Table:
    """Rows: layers (and the parts outside them); columns: parameter groups' gradient norms."""
    norms = group_norms(result)
    groups = [g for g in GROUPS if any(g in row for row in norms.values())]
    table = Table(
        title="parameter gradient norms per layer (L2 over each group's tensors)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("layer", justify="right")
    for group in groups:
        table.add_column(group, justify="right")
    for layer, row in norms.items():
        label = "—" if layer is None else str(layer)
        table.add_row(label, *(fmt(row[g]) if g in row else "" for g in groups))
    return table


def _med_max(values: np.ndarray) -> str:
    median, top = nan_quantiles(values, (0.5, 1.0))
    return f"{fmt(median)} / {fmt(top)}"
