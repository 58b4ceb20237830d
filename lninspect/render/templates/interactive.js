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
