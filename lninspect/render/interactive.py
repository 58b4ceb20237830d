"""The report's interactive page: the token heatmaps (denominator and mean of every norm's
input, per token of the first sequence) drawn by the page itself as SVG, with hover that
names the token's text, its position, the value, the module and its layer. Self-contained:
the data and the script are inline, nothing is fetched (no network). No torch.

Opening the page with `#hover=KEY,ROW,COLUMN` (KEY: denominator or mean) hovers that cell
on load, so that a headless browser shows the hover box in its DOM (tests/test_interactive).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lninspect.render.format import header, short_names
from lninspect.render.pages import render_page
from lninspect.render.stats_tables import denominator_label
from lninspect.results.one_text import StatsResult
from lninspect.streams import canonical, group_of

INTERACTIVE_HTML = "interactive.html"


def page_data(result: StatsResult) -> dict[str, Any]:
    """What the page draws: per norm its name, layer, role; per token its text and position;
    the per-(norm, token) values of sequence 0 (None where no token is)."""
    tokens = result.input.tokens[0] if result.input.tokens else []
    width = int(canonical(result.norms[0], result.norms[0].input.mean).shape[1])
    positions = result.input.positions[0] if result.input.positions else list(range(width))

    def rows(values: list[np.ndarray]) -> list[list[float | None]]:
        """Sequence 0 of each norm's array; a norm that sees heads shows its largest head
        (NaN only where all are)."""
        out = []
        for norm, array in zip(result.norms, values, strict=True):
            first = np.fmax.reduce(canonical(norm, np.asarray(array, np.float64))[0], axis=-1)
            out.append([float(v) if np.isfinite(v) else None for v in first])
        return out

    return {
        "norms": short_names([n.name for n in result.norms]),
        "layers": [n.layer for n in result.norms],
        "roles": [group_of(n).label for n in result.norms],
        "tokens": [tokens[i] if i < len(tokens) else "" for i in range(width)],
        "positions": positions,
        "maps": {
            "denominator": {
                "label": denominator_label(result),
                "log": True,
                "values": rows([n.denominator for n in result.norms]),
            },
            "mean": {
                "label": "mean",
                "log": False,
                "values": rows([n.input.mean for n in result.norms]),
            },
        },
    }


def interactive_html(result: StatsResult) -> str:
    """The page (templates/interactive.html), with its data (JSON) and script inline."""
    return render_page(
        "interactive.html",
        model=result.model.name,
        header=header(result),
        data=page_data(result),
    )
