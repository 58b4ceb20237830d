"""The one declaration of every figure lninspect writes: its file, its title, its caption, the
function that draws it, when it is drawn and where it appears.

An entry holds the PNG's file name, the title drawn above the figure (with the run's subtitle
under it), the heading and caption the report shows with it, the function that draws it from
a result, the condition under which it is drawn, and the outputs that write it (`--plot` of
`stats`, `grads`, `stats --file`, `run` and `compare`, the report, the report of several
models). The commands check and write their figures from here, the report takes its captions
from here (tests/test_catalog.py holds that every figure written is an entry, with its
caption where a report shows it). A new figure is its drawing function and one entry here.

The plot modules only draw; titles, names and captions are here. No torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lninspect.derived import has_order
from lninspect.render.compare_plots import plot_compare_layers, plot_compare_tokens
from lninspect.render.compare_tables import how_compared
from lninspect.render.corpus_plots import corpus_figure, corpus_subtitle
from lninspect.render.dimension_plots import (
    compression_title,
    plot_census,
    plot_compression,
    plot_outlier_dimensions,
)
from lninspect.render.figures import figure_of, save_figure, save_titled
from lninspect.render.format import figure_subtitle
from lninspect.render.grad_plots import plot_grad_heatmap, plot_param_grads, plot_scale_vs_std
from lninspect.render.map_plots import (
    FREEZE,
    MAP_FITS,
    SCALE_SPREAD,
    Mapped,
    MappedNorm,
    has_map,
    map_grid_name,
    map_groups,
    plot_freeze,
    plot_map_fits,
    plot_map_grid,
    plot_scale_spread,
)
from lninspect.render.run_plots import plot_input_denominator_heatmap, plot_loss, plot_series_panels
from lninspect.render.spike_plots import (
    plot_massive_roles,
    plot_spike_order,
    plot_spike_ranks,
    plot_trajectory,
    residual_scope,
)
from lninspect.render.stats_plots import plot_depth, plot_mean_heatmap, plot_std_heatmap
from lninspect.results import GradsResult, StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.results.compare import CompareResult
from lninspect.results.watch import WatchLog
from lninspect.roles import PLACEMENTS, ROLES, STREAMS
from lninspect.streams import Group
from lninspect.trends import Jump

# Where a figure appears: the outputs that write it.
STATS = "stats --plot"
GRADS = "grads --plot"
CORPUS = "stats --file --plot"
RUN = "run --plot"
COMPARE = "compare --plot"
REPORT = "report"  # and each model's figures in the report of several models
MODELS_REPORT = "report A B"  # the overlays of the report of several models
PLACES = (STATS, GRADS, CORPUS, RUN, COMPARE, REPORT, MODELS_REPORT)


@dataclass(frozen=True)
class FigureEntry:
    """One figure: what it is called and says, what draws it, where it appears."""

    name: str  # the PNG's file name
    title: str | Callable[..., str]  # drawn above it; a function of the data when it says more
    draw: Callable[..., Figure]  # the data (a result; a log and its jumps) -> the figure
    places: tuple[str, ...]  # the outputs that write it (PLACES)
    heading: str = ""  # the report's heading for it (a report shows it: required)
    caption: str = ""  # the report's text under it: what to read in it
    when: Callable[..., bool] | None = None  # drawn only where this holds of the data
    title_on_axes: bool = False  # a one-panel figure titled over its axes, not the figure
    option: str = ""  # the option that asks for it (--map), or "": drawn whenever it applies

    def __post_init__(self) -> None:
        unknown = set(self.places) - set(PLACES)
        if unknown or not self.places:
            raise ValueError(f"{self.name}: places {sorted(unknown)} are not {PLACES}")
        if REPORT in self.places and not (self.heading and self.caption):
            raise ValueError(f"{self.name}: a figure of the report needs a heading and caption")

    def title_of(self, *data: Any) -> str:
        return self.title(*data) if callable(self.title) else self.title

    def drawn_for(self, *data: Any) -> bool:
        return self.when is None or self.when(*data)

    def save(self, folder: Path, subtitle: str, *data: Any) -> Path:
        """Draw the figure, title it "title / subtitle" and write it into `folder`."""
        figure = self.draw(*data)
        if not self.title_on_axes:
            return save_titled(folder, subtitle, [(figure, self.title_of(*data), self.name)])[0]
        figure.axes[0].set_title(f"{self.title_of(*data)}\n{subtitle}", fontsize="medium")
        return save_figure(figure, folder / self.name)


def _stream(title: str) -> Callable[[StatsResult], str]:
    """A title that names the norms it leaves out of the residual stream (residual_scope)."""
    return lambda result: title.format(stream=residual_scope(result))


FIGURES = (
    FigureEntry(
        "stats-std-heatmap.png",
        "Input std of every norm, per token",
        plot_std_heatmap,
        (STATS, REPORT),
        "Input std per module and token",
        "The denominator of every norm (rms for RMSNorm) per "
        "token of sequence 0, log colour scale; one panel per kind of norm (what it reads and "
        "where it sits), a q/k norm's heads reduced by their median. Rows of the residual "
        "stream's norms brighten with depth as it grows; a bright column is a token whose "
        "activations are far larger (often the first). ▼ above the first panel: the token "
        "with the largest |value| of many norms "
        "(one token is a column a pixel or two wide in a long text).",
    ),
    FigureEntry(
        "stats-mean-heatmap.png",
        "Input mean of every norm, per token",
        plot_mean_heatmap,
        (STATS, REPORT),
        "Input mean per module and token",
        "The mean over the hidden dims that a LayerNorm "
        "subtracts; diverging scale centred at 0 (white); ▼ as in the std heatmap.",
    ),
    FigureEntry(
        "stats-std-per-layer.png",
        "Residual-stream growth with depth",
        plot_depth,
        (STATS, REPORT),
        "Residual-stream growth with depth",
        "Median input std (rms for RMSNorm) per layer with the 25–75% band over tokens, one "
        "line per norm that reads the residual stream (before attention, before the MLP, ...). "
        "Where the model has them, a panel of their own for the norms on a sub-layer's output "
        "(their input, and the output std they add to the stream: Gemma 2 / 3, OLMo 2) and "
        "for the query / key norms (tokens and heads pooled).",
    ),
    FigureEntry(
        SCALE_SPREAD,
        "The spread of the norms' scale s",
        plot_scale_spread,
        (STATS, CORPUS, REPORT),
        "The spread of the norms' scale s",
        "How far each norm's divisor s is from a constant: its coefficient of variation over "
        "the tokens (o), the same without each sequence's first token (x), and the first "
        "token's s over the median s of the rest.",
    ),
    FigureEntry(
        "stats-spike-ranks.png",
        "Do spikes keep their rank through the norm?",
        plot_spike_ranks,
        (STATS, REPORT),
        "Do spikes keep their rank?",
        "Every listed spike (the 100 largest |x| per norm): its rank among the token's |x| "
        "before the norm vs among |y| after it (left, log axes; on the dashed line the rank "
        "is kept) and its magnitude |x| vs |y| (right). Colour: the first stage of the norm "
        "that changed the rank (centring, the weight, the bias), grey when kept. A marker's "
        "area grows with the spikes at that point; the table between the panels counts the "
        "most crowded points.",
        when=has_order,
    ),
    FigureEntry(
        "stats-spike-order.png",
        "Does each norm keep the order of its spikes?",
        plot_spike_order,
        (STATS, REPORT),
        "Does each norm keep the order of its spikes?",
        "Per norm, in model order: the share of its spikes whose rank is kept and of "
        "same-token spike pairs whose order is kept (top; × where a norm has no spike, "
        "which gives no number), and its ranked spikes by the stage that re-ranked them "
        "(bottom).",
        when=has_order,
    ),
    FigureEntry(
        "stats-spike-trajectory.png",
        _stream(
            "The largest dimensions through the residual stream{stream}, before and after each norm"
        ),
        lambda result: figure_of(plot_trajectory(result)),
        (STATS, REPORT),
        "The largest dimensions through depth",
        "Sun et al.'s view: the max |x| over tokens of the dimensions that reach the "
        "largest |x| anywhere, at every norm that reads the residual stream (solid; norms on "
        "a sub-layer's output and query / key norms left out), and the max |y| after the "
        "norm (dashed), log scale.",
        when=has_order,
    ),
    FigureEntry(
        "stats-spike-roles.png",
        "Massive activations: their rank after each norm, by where the norm sits",
        lambda result: figure_of(plot_massive_roles(result)),
        (STATS, REPORT),
        "Do massive activations stay the largest, role by role?",
        "Every massive activation (a spike that passes the magnitude rule): its rank by |y| "
        "after the norm (1, at the top: still the token's largest) against the layer (the "
        "final norm at -1); the marker says where the norm sits and what it reads (before "
        "attention, on the MLP's output, ...), the colour the first stage of the "
        "norm that changed the rank (centring, the weight, the bias), grey when kept.",
        when=has_order,
    ),
    FigureEntry(
        "stats-spike-compression.png",
        compression_title,
        lambda result: figure_of(plot_compression(result)),
        (STATS, REPORT),
        "Across tokens: compression of the top dimension",
        "For the dimension of the largest spike: max over tokens of |x| divided by its "
        "median over tokens, before (x) and after (y) each norm that measured it. Each "
        "token is divided by its own std, so a token with a huge spike is shrunk most; the "
        "title counts the norms where that compresses the dimension (y below x) and where "
        "it expands it.",
        when=has_order,
    ),
    FigureEntry(
        "stats-spike-census.png",
        _stream(
            "Spike census: which dimensions spike, at the norms of the residual stream{stream}"
        ),
        lambda result: figure_of(plot_census(result)),
        (STATS, REPORT),
        "Spike census",
        "Spikes per dimension (rows: the dimensions that spike most over the model) and "
        "norm (columns), log colour scale; blank: no spike there.",
        when=has_order,
    ),
    FigureEntry(
        "stats-outlier-dims.png",
        _stream(
            "Outlier dimensions of the residual stream{stream}: mean magnitude over tokens "
            "against the other dimensions"
        ),
        plot_outlier_dimensions,
        (STATS, REPORT),
        "Outlier dimensions through depth",
        "Per norm of the residual stream, in model order: the mean over tokens of |x_j| (left, "
        "the input) and |y_j| "
        "(right, the output) of the dimensions that are outliers at most norms, as a z over "
        "the dimensions ((mean_j − mean over j) / sd over j); above the dashed line k a "
        "dimension is an outlier. A dimension has one colour in both panels.",
        when=has_order,
    ),
    FigureEntry(
        "grads-params.png",
        "Parameter gradient norms per layer",
        lambda result: figure_of(plot_param_grads(result)),
        (GRADS, REPORT),
        "Parameter gradient norms per layer",
        "L2 norm of the gradient of each parameter group "
        "per layer, log scale; grey markers: parameters outside the blocks.",
    ),
    FigureEntry(
        "grads-heatmap.png",
        "Gradient through each norm, per token",
        plot_grad_heatmap,
        (GRADS, REPORT),
        "Gradient through each norm",
        "‖∂L/∂x‖ through each norm per token, log colour scale; blank cells got no gradient; "
        "▼ as in the std heatmap.",
    ),
    FigureEntry(
        "grads-scale-vs-std.png",
        "The backward pass divides by σ: gradient scale vs input std",
        lambda result: figure_of(plot_scale_vs_std(result)),
        (GRADS, REPORT),
        "The backward pass divides by σ",
        "Gradient scale ‖∂L/∂x‖ / ‖∂L/∂y‖ of each norm and "
        "token against its input std; the dashed line is 1/σ, a norm with unit weight.",
    ),
    FigureEntry(
        "corpus-std-per-position.png",
        "Mean std of the norms' inputs per token position",
        corpus_figure,
        (CORPUS,),
        title_on_axes=True,
    ),
    FigureEntry(
        "run-input-std.png",
        "Input std (rms for an RMSNorm) of every norm over training",
        lambda log, jumps: figure_of(plot_input_denominator_heatmap(log)),
        (RUN,),
    ),
    FigureEntry(
        "run-grad-scale.png",
        "Gradient scale through each norm over training",
        lambda log, jumps: plot_series_panels(log, "grad_scale", "median |dL/dx| / |dL/dy|"),
        (RUN,),
    ),
    FigureEntry(
        "run-spikes.png",
        "The largest activation at each norm over training",
        lambda log, jumps: plot_series_panels(log, "absmax", "largest |x|", dims=True),
        (RUN,),
    ),
    FigureEntry(
        "run-loss.png",
        "Loss, and the steps where a norm statistic jumped",
        lambda log, jumps: figure_of(plot_loss(log, jumps)),
        (RUN,),
    ),
    FigureEntry(
        "compare-layers.png",
        "Per-layer statistics of each model",
        plot_compare_layers,
        (COMPARE, MODELS_REPORT),
    ),
    FigureEntry(
        "compare-tokens.png",
        "Token by token: the norm where the models differ most",
        plot_compare_tokens,
        (COMPARE, MODELS_REPORT),
        when=lambda result: result.mode == "tokens",
    ),
    *(
        FigureEntry(
            map_grid_name(group),
            f"The norm's map, {group.label}",
            lambda result, group=group: plot_map_grid(group, _sampled(result, group)),
            (STATS, CORPUS, REPORT),
            f"The norm's map, {group.label}",
            "Each norm's input element x against its output before the gain, "
            "ŷ = (x − c) / s, over the --map sample (each token's largest |x| and a uniform "
            "sample), one panel per layer for the norms of one role and placement; the first "
            "token's points in red, the least-squares line βx dashed and A·tanh(αx) in blue, "
            "α and both relative RMS errors in the corner (Zhu et al. 2025, Figure 2: a line "
            "early, an S deep).",
            when=lambda result, group=group: bool(_sampled(result, group)),
            option="--map",
        )
        for role in ROLES
        for placement in PLACEMENTS
        for group in (Group(reads, role, placement) for reads in STREAMS)
    ),
    FigureEntry(
        MAP_FITS,
        "Fits of the norm's map by layer",
        plot_map_fits,
        (STATS, CORPUS, REPORT),
        "Fits of the norm's map by layer",
        "α of A·tanh(αx) (per unit of x: it falls as x grows with depth) and the relative "
        "RMS errors of the tanh fit (o) and of the line (x), a line per role and placement.",
        when=has_map,
        option="--map",
    ),
    FigureEntry(
        FREEZE,
        "What freezing each norm's scale costs",
        plot_freeze,
        (STATS, REPORT),
        "What freezing each norm's scale costs",
        "The change of the next-token loss with one norm's s frozen at calibration "
        "constants (left: one median; right: the first token's and the rest's), by layer, "
        "a line per role and placement: the mean over the held-out texts with ± sd bars, "
        "and this text's change (x).",
        when=lambda result: result.freeze is not None,
        option="--freeze-scale",
    ),
)
BY_NAME = {entry.name: entry for entry in FIGURES}


def _sampled(result: Mapped, group: Group) -> list[MappedNorm]:
    """The norms of `group` with a sampled map (--map), in layer order; none without one."""
    return dict(map_groups(result)).get(group, [])


def figures_of(place: str) -> tuple[FigureEntry, ...]:
    """The entries of the figures that `place` writes, in the order it writes them."""
    return tuple(entry for entry in FIGURES if place in entry.places)


def names_of(*places: str, asked: bool = True) -> tuple[str, ...]:
    """The file names `places` may write (to check an output folder before any work);
    `asked=False`: leave out those that only an option draws (--map)."""
    return tuple(
        entry.name
        for entry in FIGURES
        if set(places) & set(entry.places) and (asked or not entry.option)
    )


def save_figures(place: str, folder: Path, subtitle: str, *data: Any) -> list[Path]:
    """Draw and write, one at a time, the figures of `place` that apply to `data`."""
    drawn = [entry for entry in figures_of(place) if entry.drawn_for(*data)]
    return [entry.save(folder, subtitle, *data) for entry in drawn]


def save_stats_figures(result: StatsResult, folder: Path) -> list[Path]:
    """`stats --plot`: the statistics figures, the spike figures where they were captured."""
    return save_figures(STATS, folder, figure_subtitle(result), result)


def save_grads_figures(result: GradsResult, folder: Path) -> list[Path]:
    """`grads --plot`: the gradient figures."""
    return save_figures(GRADS, folder, figure_subtitle(result), result)


def save_report_figures(result: GradsResult, folder: Path) -> list[Path]:
    """The report's figures: the statistics and spike figures, then the gradient figures."""
    return save_figures(REPORT, folder, figure_subtitle(result), result)


def save_corpus_figures(result: AggregateResult, folder: Path) -> list[Path]:
    """`stats --file --plot`: the figures of a corpus (with --map, its sampled maps)."""
    return save_figures(CORPUS, folder, corpus_subtitle(result), result)


def save_run_figures(log: WatchLog, found: list[Jump], folder: Path) -> list[Path]:
    """`run --plot`: the figures of a watched run and the jumps found in it."""
    return save_figures(RUN, folder, f"{log.path} · {len(log.records)} records", log, found)


def save_compare_figures(result: CompareResult, folder: Path, place: str = COMPARE) -> list[Path]:
    """`compare --plot` (or `place`: the report of several models): the overlays, the token
    figure only in tokens mode."""
    models = " vs ".join(chr(65 + i) for i in range(len(result.models)))
    return save_figures(place, folder, f"{models} · {how_compared(result)}", result)
