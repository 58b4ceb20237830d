"""The table of the norms' maps (--map; lninspect.mapfit) and of freezing their scale
(--freeze-scale; lninspect.results.freeze): one row per norm. No torch."""

from __future__ import annotations

from rich.console import RenderableType

from lninspect.render.fit import Column, FitTable
from lninspect.render.format import fmt, header, table_names
from lninspect.results import StatsResult

MAP_CAPTION = (
    "the map ŷ = (x - c) / s, the output before the gain, over a sample of (x, ŷ) pairs: "
    "A·tanh(αx) and the line βx fitted by least squares, their relative RMS errors; "
    "pairs = sampled (tails: each token's largest |x|)"
)


def map_tables(result: StatsResult, wide: bool = False) -> list[RenderableType]:
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
