"""The report's interactive page: the token heatmaps (denominator and mean of every norm's
input, per token of the first sequence) drawn by the page itself as SVG, with hover that
names the token's text, its position, the value, the module and its layer. Self-contained:
the data and the script are inline, nothing is fetched (no network). No torch.

Opening the page with `#hover=KEY,ROW,COLUMN` (KEY: denominator or mean) hovers that cell
on load, so that a headless browser shows the hover box in its DOM (tests/test_interactive).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from lninspect.render.format import header, short_names
from lninspect.render.inline import script_json
from lninspect.render.stats_tables import denominator_label
from lninspect.results.stats import StatsResult
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


SCRIPT = r"""
const data = JSON.parse(document.getElementById("data").textContent);
const tip = document.getElementById("tooltip");
const CELL = 14, LEFT = 110, TOP = 8;
function colour(t) {  // a dark-blue to yellow ramp, t in [0, 1]
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), 3);
  const f = x - i, c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const SVG = "http://www.w3.org/2000/svg", LABELS = 64, KEY = 240, STEPS = 48;
function add(svg, tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  Object.entries(attributes).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  svg.appendChild(node);
  return node;
}
function shown(token) {  // a token as its axis label: visible whitespace, at most 10 characters
  const text = token.replace(/\n/g, "\u23ce").replace(/ /g, "\u00b7");
  return text.length > 10 ? text.slice(0, 9) + "\u2026" : text;
}
function draw(key) {
  const map = data.maps[key], svg = document.getElementById("map-" + key);
  const finite = map.values.flat().filter(v => v !== null && (!map.log || v > 0));
  const f = v => map.log ? Math.log10(v) : v;
  const lo = Math.min(...finite.map(f)), hi = Math.max(...finite.map(f));
  const rows = map.values.length, cols = data.tokens.length, bottom = TOP + rows * CELL;
  svg.setAttribute("width", Math.max(LEFT + cols * CELL + 10, LEFT + KEY + 120));
  svg.setAttribute("height", bottom + LABELS + 50);
  map.values.forEach((row, r) => {
    add(svg, "text", {x: LEFT - 4, y: TOP + r * CELL + CELL - 3, "text-anchor": "end"},
        data.norms[r]);
    row.forEach((v, c) => {
      const cell = add(svg, "rect", {x: LEFT + c * CELL, y: TOP + r * CELL, width: CELL - 1,
        height: CELL - 1, id: `${key}-${r}-${c}`,
        fill: v === null ? "#ddd" : colour((f(v) - lo) / ((hi - lo) || 1))});
      cell.addEventListener("mouseover", () => hover(key, r, c));
    });
  });
  data.tokens.forEach((token, c) => {  // the token axis: each column's text, written downwards
    const x = LEFT + c * CELL + CELL / 2 + 3, y = bottom + 4;
    add(svg, "text", {x: x, y: y, class: "token", "data-position": data.positions[c],
      transform: `rotate(90 ${x} ${y})`}, shown(token));
  });
  const top = bottom + LABELS, ramp = add(svg, "g", {class: "key", id: `key-${key}`});
  for (let i = 0; i < STEPS; i++) {  // the colour key: the ramp from the smallest to the largest
    add(ramp, "rect", {x: LEFT + i * KEY / STEPS, y: top, width: KEY / STEPS + 0.5, height: 12,
      fill: colour(i / (STEPS - 1))});
  }
  [0, 0.5, 1].forEach(t => {
    const v = map.log ? 10 ** (lo + t * (hi - lo)) : lo + t * (hi - lo);
    add(ramp, "text", {x: LEFT + t * KEY, y: top + 26, "text-anchor": "middle",
      class: "key-tick", "data-value": v}, Number(v).toPrecision(3));
  });
  add(ramp, "text", {x: LEFT + KEY + 12, y: top + 10, class: "key-label"},
      `${map.label}${map.log ? " (log scale)" : ""}; grey: none`);
}
function hover(key, r, c) {
  const map = data.maps[key], v = map.values[r][c];
  const layer = data.layers[r] === null ? "outside the blocks" : `layer ${data.layers[r]}`;
  tip.dataset.token = data.tokens[c]; tip.dataset.position = data.positions[c];
  tip.dataset.value = v === null ? "" : v; tip.dataset.layer = data.layers[r] ?? "";
  tip.dataset.module = data.norms[r]; tip.dataset.statistic = map.label;
  tip.textContent = `${data.norms[r]} (${layer}, ${data.roles[r]}) · token ` +
    `${JSON.stringify(data.tokens[c])} at position ${data.positions[c]} · ${map.label} ` +
    (v === null ? "none" : Number(v).toPrecision(4));
}
Object.keys(data.maps).forEach(draw);
const asked = /^#hover=(\w+),(\d+),(\d+)$/.exec(location.hash);
if (asked) {
  document.getElementById(`${asked[1]}-${asked[2]}-${asked[3]}`)
    .dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
}
"""

CSS = (
    "body{font:14px system-ui,sans-serif;margin:1.5em;max-width:100%}"
    "svg text{font:10px monospace}"
    "#tooltip{position:sticky;top:0;background:#ffd;padding:.3em .6em;border:1px solid #cc9;"
    "min-height:1.2em;font-family:monospace}"
)


def interactive_html(result: StatsResult) -> str:
    """The page, with its data (JSON) and script inline."""
    e = html.escape
    content = page_data(result)
    data = script_json(content)
    maps = "".join(
        f"<h2>{e(m['label'])} of each norm's input, per token</h2>"
        f'<svg id="map-{key}" xmlns="http://www.w3.org/2000/svg"></svg>'
        for key, m in content["maps"].items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lninspect · token heatmaps · {e(result.model.name)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>Token heatmaps</h1>
<p>{e(header(result))}. Hover a cell: its module, layer, token, position and value. Under
each map: the tokens (· a space, ⏎ a new line) and the colour key.</p>
<div id="tooltip">hover a cell</div>
{maps}
<script type="application/json" id="data">{data}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
