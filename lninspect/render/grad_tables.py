"""Rich tables of gradient results: per norm module and per layer of parameters."""

from __future__ import annotations

import numpy as np
from rich.console import Group

from lninspect.derived import group_norms, nan_quantiles, with_grads
from lninspect.render.format import fmt, header, new_table, table_names, titled
from lninspect.results import GradsResult

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


# The groups merged in the 80-column table (L2 over the union: sqrt of the summed squares).
MERGED = {
    "embed": ("embed",),
    "attention": ("attn_in", "attn_out"),
    "mlp": ("mlp_in", "mlp_out"),
    "norms": ("norm_weight", "norm_bias"),
    "head": ("head",),
    "other": ("other",),
}


def grads_table(result: GradsResult, wide: bool = False) -> Group:
    """One row per norm: median over tokens of |dL/dy|, |dL/dx| through it, residual (max too)."""
    table = new_table()
    columns = ["|dL/dy|", "|dL/dx|", "residual", "scale"]
    if wide:
        columns = ["|dL/dy| med / max", "|dL/dx| med / max", "residual med / max", "scale med"]
    table.add_column("module", no_wrap=not wide, overflow="fold")
    table.add_column("role", no_wrap=True)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    pairs = with_grads(result)
    names = table_names([n.name for n, _ in pairs], wide)
    cell = _med_max if wide else median_cell
    for name, (norm, grad) in zip(names, pairs, strict=True):
        cells = [cell(v) for v in (grad.output_norm, grad.input_norm, grad.residual_norm)]
        table.add_row(name, norm.role, *cells, fmt(nan_quantiles(grad.scale, (0.5,))[0]))
    caption = (
        f"loss: {result.loss_kind}. |dL/dy|: gradient at the norm's output; |dL/dx|: through "
        "the norm to its input; residual: |dL/dx| in total (every use of x); scale = "
        "|dL/dx| / |dL/dy|. "
        + ("Median / max over tokens." if wide else "Medians over tokens; --wide adds the max.")
    )
    return titled(table, f"{header(result)} · loss {fmt(result.loss)}", caption)


def layer_grads_table(result: GradsResult, wide: bool = False) -> Group:
    """Rows: layers (and the parts outside them); columns: parameter groups' gradient norms."""
    norms = group_norms(result)
    columns = {g: (g,) for g in GROUPS} if wide else MERGED
    present = {
        c: gs for c, gs in columns.items() if any(g in row for row in norms.values() for g in gs)
    }
    table = new_table()
    table.add_column("layer", justify="right")
    for column in present:
        table.add_column(column, justify="right", no_wrap=True)
    for layer, row in norms.items():
        label = "—" if layer is None else str(layer)
        table.add_row(label, *(_merged(row, groups) for groups in present.values()))
    caption = (
        None
        if wide
        else (
            "attention = attn_in + attn_out, mlp = mlp_in + mlp_out, norms = weights + biases "
            "(L2 over both); --wide shows each group"
        )
    )
    return titled(
        table, "parameter gradient norms per layer (L2 over each group's tensors)", caption
    )


def _merged(row: dict[str, float], groups: tuple[str, ...]) -> str:
    """The L2 norm over the groups present in `row` (empty when none is)."""
    values = [row[g] for g in groups if g in row]
    return fmt(float(np.sqrt(sum(v * v for v in values)))) if values else ""


def median_cell(values: np.ndarray) -> str:
    """The median over tokens, as a cell (of this table and the notebook's)."""
    return fmt(nan_quantiles(values, (0.5,))[0])


def _med_max(values: np.ndarray) -> str:
    median, top = nan_quantiles(values, (0.5, 1.0))
    return f"{fmt(median)} / {fmt(top)}"
