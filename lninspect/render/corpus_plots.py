"""The figure of a corpus run: mean std of the norms' inputs per token position, per role.

Matplotlib Figure objects built directly (no pyplot); no torch. The first positions are
where the first-token effect (attention sinks, massive activations) shows.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lninspect.derived import role_curves
from lninspect.render.figures import new_figure
from lninspect.results.aggregate import AggregateResult


def plot_std_per_position(result: AggregateResult, ax: Axes | None = None) -> Axes:
    """One line per role: the mean std (rms) of its modules' inputs at each position."""
    if ax is None:
        ax = new_figure().add_subplot()
    cycle = [colormaps["tab10"](i) for i in range(10)]
    for i, (role, curve) in enumerate(role_curves(result).items()):
        positions = np.arange(len(curve))
        ax.plot(positions, curve, color=cycle[i % len(cycle)], label=role, linewidth=1.2)
        ax.plot(positions[:1], curve[:1], "o", color=cycle[i % len(cycle)], markersize=5)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("token position in the sequence (0 = first)")
    ax.set_ylabel("mean std of the norm's input (rms for RMSNorm)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="role", fontsize="small")
    return ax


def corpus_figure(result: AggregateResult) -> Figure:
    """The per-position figure, untitled (its entry in lninspect.render.catalog titles it)."""
    figure = new_figure(9.0, 5.0)
    plot_std_per_position(result, figure.add_subplot())
    return figure


def corpus_subtitle(result: AggregateResult) -> str:
    """The model and the corpus, for under the title."""
    m, c = result.model, result.corpus
    return (
        f"{m.name} ({m.source}) · {c.tokens:,} tokens in {c.sequences} sequences of ≤ {c.seq_len}"
    )
