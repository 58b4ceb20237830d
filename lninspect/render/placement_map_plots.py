"""The figure of `lninspect placement --train --map` (matplotlib Figure; no torch).

- placement-train-map.png: does each norm's map become an S, with depth and with training?
  The tanh fit's relative error over the line's, by depth, at the start (thin) and the end
  (thick) of training, every layout trained (DyT has no s: not drawn), at the largest
  learning rate, a panel per warm-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lninspect.placement.layouts import FINAL, LAYOUTS
from lninspect.render.figures import new_figure
from lninspect.render.placement_train_plots import per_warmup_figure, run_label
from lninspect.results.placement import PlacementResult
from lninspect.results.placement_training import MAP_AT, TrainRun, map_ratio

MAP_PNG = "placement-train-map.png"


def has_maps(result: PlacementResult) -> bool:
    """Whether some run sampled its norms' maps (--map)."""
    training = result.training
    return training is not None and any(r.map_fit("alpha") is not None for r in training.runs)


def map_figure(result: PlacementResult) -> Figure:
    """A panel per warm-up: map_ratio by depth at the start and the end, every layout."""
    title = "Is each norm's map an S? The tanh fit's error over the line's"
    return per_warmup_figure(result, title, plot_map_ratio)


def map_profile(run: TrainRun) -> tuple[np.ndarray, np.ndarray] | None:
    """x positions (block l's norms that read the residual stream spread over [l, l + 1) in
    the order the stream meets them, ln_f at L) and (len(MAP_AT), norms) map_ratio in that
    order; None: no --map. A norm on a sub-layer's output (peri-LN's) is left out."""
    keys = [k for k in LAYOUTS[run.layout].residual_keys() if k != FINAL]
    ratios = [map_ratio(run, key) for key in keys]
    if any(r is None for r in ratios):
        return None
    found = [r for r in ratios if r is not None]
    layers = found[0].shape[1]
    columns = np.stack(found, axis=2).reshape(len(MAP_AT), len(keys) * layers)
    x = np.arange(len(keys) * layers) / len(keys)
    final = map_ratio(run, FINAL)
    if final is not None:
        columns, x = np.concatenate([columns, final], axis=1), np.append(x, layers)
    return x, columns


def plot_map_ratio(runs: list[TrainRun], ax: Axes | None = None) -> Axes:
    """Per layout with maps: the ratio at the start (thin) and the end (thick), or a note
    where no layout sampled its maps (DyT alone)."""
    ax = ax or new_figure().subplots()
    profiles = [(run, map_profile(run)) for run in runs]
    drawn = [(run, p) for run, p in profiles if p is not None]
    if not drawn:
        ax.text(0.5, 0.5, "no map sampled (DyT has no s)", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return ax
    for run, (x, ratio) in drawn:
        layout = LAYOUTS[run.layout]
        style: dict[str, Any] = {"color": layout.color, "linestyle": layout.linestyle}
        ax.plot(x, ratio[0], lw=1, alpha=0.45, label="_start", **style)
        ax.plot(
            x, ratio[-1], lw=2, marker=layout.marker, markersize=4, label=run_label(run), **style
        )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.text(0.01, 1.0, " a line fits as well", transform=ax.get_yaxis_transform(),
            va="bottom", fontsize=7, color="0.35")  # fmt: skip
    ax.set_xlabel("depth: block l's norms of the residual stream in [l, l + 1); the final at L")
    ax.set_ylabel("tanh error / line error (below 1: an S)")
    warm = f"warm-up {runs[0].warmup}" if runs[0].warmup else "no warm-up"
    skipped = [LAYOUTS[run.layout].label for run, p in profiles if p is None]
    note = f" ({', '.join(skipped)}: no s, no map)" if skipped else ""
    ax.set_title(f"{warm}: thick at the end, thin at step 0{note}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2,
              frameon=False)  # fmt: skip
    return ax
