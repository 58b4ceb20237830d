"""The table of the norms' maps (--map; lninspect.mapfit) and of freezing their scale
(--freeze-scale; lninspect.results.freeze): one row per norm. No torch."""

from __future__ import annotations

import math

from rich.console import RenderableType

from lninspect.render.fit import Column, FitTable
from lninspect.render.format import fmt, header, table_names
from lninspect.results import StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.results.freeze import FreezeChange
from lninspect.roles import group_label
from lninspect.streams import group_of

MAP_CAPTION = (
    "the map ŷ = (x - c) / s, the output before the gain, over a sample of (x, ŷ) pairs: "
    "A·tanh(αx) and the line βx fitted by least squares, their relative RMS errors; "
    "pairs = sampled (tails: each token's largest |x|)"
)


def map_tables(result: StatsResult | AggregateResult, wide: bool = False) -> list[RenderableType]:
    """The map table when some norm has a sampled map, else nothing."""
    norms = [n for n in result.norms if n.map is not None]
    if not norms:
        return []
    names = table_names([n.name for n in norms], wide)
    rows = []
    for name, norm in zip(names, norms, strict=True):
        found = norm.map
        assert found is not None
        rows.append(
            [
                name,
                norm.role,
                fmt(found.alpha),
                fmt(found.amplitude),
                fmt(found.tanh_error),
                fmt(found.line_error),
                fmt(found.slope),
                f"{found.x.size} ({found.tails})",
            ]
        )
    headers = ["module", "role", "α", "A", "tanh err", "line err", "β", "pairs (tails)"]
    drops = {"β": 1, "pairs (tails)": 2, "role": 3}
    columns = [
        Column(h, [r[i] for r in rows], left=h in ("module", "role"), drop=drops.get(h))
        for i, h in enumerate(headers)
    ]
    return [FitTable(f"{header(result)} · the norm's map", columns, MAP_CAPTION, wide)]


FREEZE_CAPTION = (
    "Δ loss = next-token loss with the norm's s frozen minus as it is, on this text; k = the "
    "median s of the calibration tokens that are not first, k₀ the first tokens' (classes: "
    "k₀ at position 0, k after); mean ± sd = the same change over the held-out texts (each "
    "frozen with the other texts' constants); * = the mean is beyond 2 standard errors"
)


def freeze_tables(result: StatsResult, wide: bool = False) -> list[RenderableType]:
    """Freezing each norm's scale, then each group and all at once (--freeze-scale)."""
    freeze = result.freeze
    norms = [n for n in result.norms if n.freeze is not None]
    if freeze is None or not norms:
        return []
    rows = []
    for name, norm in zip(table_names([n.name for n in norms], wide), norms, strict=True):
        f = norm.freeze
        assert f is not None
        rows.append(
            [name, norm.role, fmt(f.constant), fmt(f.first), *_changes(f.median, f.classes)]
        )
    for group in freeze.groups:
        label = group_label(group.reads, group.role, group.placement)
        rows.append(
            [
                f"all {label} ({group.norms})",
                group.role,
                "",
                "",
                *_changes(group.median, group.classes),
            ]
        )
    rows.append(["every norm", "", "", "", *_changes(freeze.all.median, freeze.all.classes)])
    headers = ["module", "role", "k", "k₀", "Δ median", "mean ± sd", "Δ classes", "mean ± sd "]
    drops = {"k₀": 1, "k": 2, "role": 3}
    columns = [
        Column(h, [r[i] for r in rows], left=h in ("module", "role"), drop=drops.get(h))
        for i, h in enumerate(headers)
    ]
    title = f"{header(result)} · freezing s (loss {fmt(freeze.loss)}, {freeze.texts} texts)"
    return [FitTable(title, columns, FREEZE_CAPTION, wide)]


def _changes(median: FreezeChange, classes: FreezeChange) -> list[str]:
    return [fmt(median.change), _spread(median), fmt(classes.change), _spread(classes)]


def _spread(change: FreezeChange) -> str:
    if not change.changes:
        return "—"
    return f"{fmt(change.mean)} ± {fmt(change.sd)}" + (" *" if change.moves else "")


# The report's findings of the scale, the map and freezing (render/report.py's rows) --------


def scale_finding(result: StatsResult) -> str:
    """The norm whose first token's s is farthest from the rest's, with its spread."""
    found = [n for n in result.norms if n.scale is not None and math.isfinite(n.scale.first_ratio)]
    if not found:
        return "—"
    norm = max(found, key=lambda n: n.scale.first_ratio if n.scale else -math.inf)
    assert norm.scale is not None
    s = norm.scale
    return (
        f"s(first token) / median s(rest) = {fmt(s.first_ratio)} at {norm.name} "
        f"({group_of(norm).label}); cv of s {fmt(s.cv)}, {fmt(s.cv_rest)} without the first"
    )


NEAR_LINE = 0.9  # a tanh fit's error above this share of the line's: nearly a line


def map_finding(result: StatsResult) -> str:
    """The norm whose map is most S-shaped: the lowest tanh error relative to the line's."""
    found = [n for n in result.norms if n.map is not None and n.map.line_error > 0]
    if not found:
        return "—"
    norm = min(found, key=lambda n: n.map.tanh_error / n.map.line_error if n.map else math.inf)
    sample = norm.map
    assert sample is not None
    near = sample.tanh_error > NEAR_LINE * sample.line_error
    return (
        f"most S-shaped at {norm.name} ({group_of(norm).label}): relative error "
        f"{fmt(sample.tanh_error)} for A·tanh(αx) against {fmt(sample.line_error)} for a "
        f"line, α = {fmt(sample.alpha)}"
        + (f"; no norm's map is far from a line (tanh error > {NEAR_LINE:g} of the line's)"
           if near else "")
    )  # fmt: skip


def freeze_finding(result: StatsResult) -> str:
    """Every norm frozen at once, both variants, and how many norms move the loss alone."""
    freeze = result.freeze
    if freeze is None:
        return "—"
    every = freeze.all
    alone = sum(n.freeze is not None for n in result.norms)
    return (
        f"every norm's s frozen at once: loss {_signed(every.median.change)} (one median), "
        f"{_signed(every.classes.change)} (the first token's apart) on this text; "
        f"{len(freeze.moved)} of {alone} norms alone move the loss beyond its spread"
    )


def _signed(change: float) -> str:
    return f"{'+' if change > 0 else ''}{fmt(change)}" if math.isfinite(change) else "not finite"
