"""Spike tables (80 and 120 columns) and figures, on a synthetic result with planted spikes."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from rich.console import Console

from lninspect.render.catalog import STATS, figures_of
from lninspect.render.dimension_plots import (
    compression_title,
    plot_census,
    plot_compression,
    plot_outlier_dimensions,
)
from lninspect.render.figures import new_figure, save_titled
from lninspect.render.report import findings
from lninspect.render.spike_plots import (
    STAGE_COLOURS,
    plot_spike_order,
    plot_spike_ranks,
    plot_trajectory,
)
from lninspect.render.spike_tables import CENSUS_TITLES, census_table, spike_tables
from lninspect.results import (
    Ablation,
    AcrossToken,
    CensusEntry,
    ChangedBy,
    DimensionStats,
    GradsResult,
    InputInfo,
    InputStats,
    KindOrder,
    ModelInfo,
    NormStats,
    OrderStats,
    OutputStats,
    PositionCount,
    Spike,
    TokenCount,
    Trajectory,
)

TOKENS = 6
PIECES = ["<|endoftext|>", " The", " quick", " brown", "\n", " fox"]


def spike(token: int, dim: int, value: float, ranks: tuple[int, int, int, int]) -> Spike:
    first = next((i for i in (1, 2, 3) if ranks[i] != ranks[i - 1]), None)
    return Spike(
        sequence=0,
        token=token,
        head=None,
        dim=dim,
        value=value,
        out_value=value / 100,
        z=9.5,
        massive=abs(value) > 100,
        rank_in=ranks[0],
        rank_centred=ranks[1],
        rank_weighted=ranks[2],
        rank_out=ranks[3],
        changed_by=(None, "centre", "weight", "bias")[first or 0] if ranks[3] != ranks[0] else None,
    )


def norm(layer: int, leaf: str, spikes: list[Spike], census: list[CensusEntry]) -> NormStats:
    ones = np.ones((1, TOKENS), dtype=np.float32)
    ranked = len(spikes)
    kept = sum(s.changed_by is None for s in spikes)
    stages = {k: sum(s.changed_by == k for s in spikes) for k in ("centre", "weight", "bias")}
    kinds = {
        kind: kind_order([s for s in spikes if s.massive == (kind == "massive")])
        for kind in ("massive", "outlier")
    }
    return NormStats(
        name=f"model.layers.{layer}.{leaf}",
        type="LayerNorm",
        kind="layernorm",
        layer=layer,
        role="attn" if leaf == "input_layernorm" else "mlp",
        eps=1e-5,
        weight=None,
        input=InputStats(
            mean=ones * 0, std=ones, rms=ones, absmax=ones, absmax_dim=ones.astype(np.int64)
        ),
        output=OutputStats(mean=ones * 0, std=ones),
        spikes=spikes,
        order=OrderStats(
            spikes=ranked,
            ranked=ranked,
            rank_kept=kept / ranked if ranked else float("nan"),
            pairs=0,
            pairs_kept=float("nan"),
            changed_by=ChangedBy(**stages),
            spike_count=np.zeros((1, TOKENS), dtype=np.int64),
            topk_retention=ones * 0.75,
            **kinds,
        ),
        across_token=[
            AcrossToken(
                dim=447,
                rho=0.9,
                rho_abs=0.95,
                compression_in=1000.0 * (layer + 1),
                compression_out=10.0,
                tokens=TOKENS,
            )
        ]
        if spikes
        else [],
        census=census,
    )


def kind_order(spikes: list[Spike]) -> KindOrder:
    kept = sum(s.changed_by is None for s in spikes)
    stages = {k: sum(s.changed_by == k for s in spikes) for k in ("centre", "weight", "bias")}
    return KindOrder(
        spikes=len(spikes),
        ranked=len(spikes),
        rank_kept=kept / len(spikes) if spikes else float("nan"),
        pairs=0,
        pairs_kept=float("nan"),
        changed_by=ChangedBy(**stages),
    )


def entry(count: int, tokens: list[tuple[str, int]]) -> CensusEntry:
    return CensusEntry(
        dim=447,
        count=count,
        max_abs=3000.0,
        first_token_share=1.0,
        positions=[PositionCount(0, 1, count)],
        tokens=[TokenCount(t, n) for t, n in tokens],
        sequences=1,
        massive=count,
        massive_first_share=1.0,
        max_at=[0, 0],
        massive_tokens=[TokenCount(t, n) for t, n in tokens],
    )


def synthetic(with_spikes: bool = True) -> GradsResult:
    """3 layers: layer 0 has no spike; layers 1-2 carry dim 447 (3000, rank kept) and spikes
    that centring (1 -> 2), the weight (1 -> 40) and the bias (3 -> 4) re-rank."""
    norms = [norm(0, "input_layernorm", [], [])]
    if with_spikes:
        norms += [
            norm(
                1,
                "input_layernorm",
                [spike(0, 447, 3000.0, (1, 1, 1, 1)), spike(0, 12, -200.0, (2, 1, 1, 1))],
                [entry(1, [("<|endoftext|>", 1)])],
            ),
            norm(
                2,
                "input_layernorm",
                [spike(0, 447, 2900.0, (1, 1, 1, 1)), spike(4, 3, 40.0, (1, 1, 40, 40))],
                [entry(1, [("<|endoftext|>", 1)])],
            ),
            norm(2, "post_attention_layernorm", [spike(4, 9, 30.0, (3, 3, 3, 4))], []),
        ]
    else:
        norms += [norm(1, "input_layernorm", [], []), norm(2, "input_layernorm", [], [])]
    names = [n.name for n in norms]
    return GradsResult(
        model=ModelInfo(
            cls="LlamaForCausalLM",
            name="synthetic",
            source="module",
            dtype="float32",
            device="cpu",
            num_layers=3,
            hidden_size=512,
        ),
        input=InputInfo(num_sequences=1, num_tokens=TOKENS, tokens=[PIECES]),
        norms=norms,
        spike_z=6.0,
        spike_abs=100.0,
        spike_ratio=1000.0,
        top_k=8,
        trajectory=Trajectory(
            dims=[447, 12],
            norms=names,
            max_abs_in=np.array([[1.0, 3000, 2900, 2800], [1, 200, 50, 40]])[:, : len(names)],
            max_abs_out=np.array([[0.1, 30, 29, 28], [0.1, 2, 0.5, 0.4]])[:, : len(names)],
        ),
        ablation=Ablation(
            layer=1,
            dims=[447],
            loss=3.25,
            loss_mean=3.26,
            loss_zero=9.8,
            module="model.layers.1.input_layernorm",
            entries=1,
            texts=3,
            changes_mean=[0.01, 0.02, 0.03],
            changes_zero=[6.0, 7.0, 8.0],
        ),
        loss=3.25,
    )


def render(table, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    return console.file.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_spike_tables_fit_the_terminal_and_never_cut_numbers(width: int):
    result = synthetic()
    lines = [line for table in spike_tables(result) for line in render(table, width)]
    assert all(len(line.rstrip()) <= width for line in lines)
    text = "\n".join(lines)
    for number in ("3000 m", "-200 m", "1→40", "3→4", "2→1", "40", "100%", "+6.55"):
        assert re.search(rf"(^|\s){re.escape(number)}(\s|$)", text, re.M), number
    for header in ("module", "token", "rank", "kept", "pairs", "centre", "weight", "bias"):
        assert header in text
    assert "layers.1.input_layernorm" in text.replace("\n", "").replace(" ", "") or width == 80


def test_order_table_counts_each_stage_and_says_nan_for_no_spike():
    lines = render(spike_tables(synthetic())[1], 80)
    row = next(line for line in lines if line.strip().startswith("0.in "))
    assert "—" in row  # no spike: no share made up
    total = next(line for line in lines if line.strip().startswith("all")).split()
    # massive: 447 twice kept, -200 re-ranked by centring; outliers: 40 (weight), 30 (bias)
    assert total[1:8] == ["2/3", "2", "0%", "—", "0", "1", "1"]


def test_headline_reads_from_the_spikes():
    rows = dict(findings(synthetic()))
    assert rows["largest spike"].startswith("model.layers.1.input_layernorm, token t0")
    assert "x = 3000 (massive)" in rows["largest spike"]
    massive = rows["massive activations kept by the norms"]
    assert massive == (
        "3 in 2 of 4 norms; before attention (input_layernorm): demoted in 1/3, by the centre"
    )
    outliers = rows["z-rule outliers kept by the norms"]
    assert outliers.startswith("rank kept for 0% of 2 spikes in 2 of 4 norms")
    assert "centring 0, the weight 1, the bias 1" in outliers
    assert rows["massive dimension"].startswith(
        "dim 447: 2 at layers 1-2, 100% of them on the first token"
    )
    ablated = rows["massive activations ablated"]
    assert (
        "loss 3.25 → 3.26 set to their mean over 3 other texts (Δ +0.01), 9.8 set to 0" in ablated
    )
    quiet = dict(findings(synthetic(with_spikes=False)))
    assert quiet["largest spike"].startswith("none (|x| > 100")
    assert quiet["massive activations kept by the norms"].startswith("no massive activation")


def test_rank_plot_colours_each_spike_by_the_stage_that_moved_it():
    figure = plot_spike_ranks(synthetic(), new_figure(12, 6))
    left, right = figure.axes[:2]
    points = {}
    for collection in left.collections:
        colour = to_hex(collection.get_facecolor()[0])
        points[colour] = sorted(map(tuple, collection.get_offsets().tolist()))
    assert points[STAGE_COLOURS[None]] == [(1.0, 1.0)]  # 447 twice: one point, ×2
    assert points[STAGE_COLOURS["centre"]] == [(2.0, 1.0)]
    assert points[STAGE_COLOURS["weight"]] == [(1.0, 40.0)]
    assert points[STAGE_COLOURS["bias"]] == [(3.0, 4.0)]
    table = [t.get_text() for t in figure.axes[2].texts]  # beside the panel, not on points
    assert "   1 → 1    ×2" in table and not left.texts
    assert left.get_xscale() == left.get_yscale() == "log" == right.get_xscale()
    sizes = np.concatenate([c.get_offsets() for c in right.collections])
    assert sorted(sizes[:, 0].tolist()) == [30.0, 40.0, 200.0, 2900.0, 3000.0]


def crowded() -> GradsResult:
    """30 layers of two norms, spikes at ranks 1-3 in and 1-576 out, |x| from 0.6 to 21000:
    as many points as SmolLM2-135M gives."""
    rng = np.random.default_rng(0)
    result = synthetic()
    norms = []
    for layer in range(30):
        for leaf in ("input_layernorm", "post_attention_layernorm"):
            spikes = [
                spike(0, 7, float(v), (int(a), int(a), int(b), int(b)))
                for v, a, b in zip(
                    np.exp(rng.uniform(np.log(0.6), np.log(21000), 60)),
                    rng.integers(1, 4, 60),
                    np.minimum(rng.zipf(1.3, 60), 576),
                    strict=True,
                )
            ]
            norms.append(norm(layer, leaf, spikes, []))
    result.norms = norms
    return result


def _collide(labels) -> list[tuple[str, str]]:
    shown = [t for t in labels if t.get_text() and t.get_visible()]
    boxes = [t.get_window_extent() for t in shown]
    return [
        (shown[i].get_text(), shown[j].get_text())
        for i in range(len(shown))
        for j in range(i + 1, len(shown))
        if boxes[i].overlaps(boxes[j])
    ]


def test_rank_figure_labels_never_overlap_at_the_saved_size(tmp_path: Path):
    figure = plot_spike_ranks(crowded())
    figure.suptitle("a title\na subtitle")
    figure.canvas.draw()  # as save_figure renders it
    for ax in figure.axes[:2]:
        for axis in (ax.xaxis, ax.yaxis):
            assert not _collide(axis.get_ticklabels()), axis  # no "200300"
    left, _, table = figure.axes
    assert not left.texts and not _collide(table.texts)
    rows = [t.get_text() for t in table.texts if "×" in t.get_text()]
    counts = [int(r.rsplit("×", 1)[1]) for r in rows]
    assert len(rows) == 12 and counts == sorted(counts, reverse=True)


def test_order_plot_shares_and_stage_bars():
    figure = plot_spike_order(synthetic(), new_figure(11, 7.5))
    top, bottom = figure.axes[:2]
    massive, outliers = (line.get_ydata() for line in top.get_lines()[:2])  # each kind apart
    np.testing.assert_allclose(massive, [np.nan, 0.5, 1.0, np.nan])
    np.testing.assert_allclose(outliers, [np.nan, np.nan, 0.0, 0.0])
    assert top.get_title().startswith("massive activations: 3 in 2 of 4 norms, rank kept for 67%")
    heights = [p.get_height() for p in bottom.patches]
    assert sum(heights) == 5  # every ranked spike, stacked by stage


def test_trajectory_compression_and_census_draw_their_numbers():
    result = synthetic()
    ax = plot_trajectory(result, new_figure(11, 6).add_subplot())
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["dim 447"].get_ydata(), [1, 3000, 2900, 2800])
    assert ax.get_yscale() == "log"
    ax = plot_compression(result, new_figure(11, 6).add_subplot())
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [2000, 3000, 3000])
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [10, 10, 10])
    ax = plot_census(result, new_figure(11, 6).add_subplot())
    grid = np.asarray(ax.images[0].get_array(), dtype=float)
    np.testing.assert_allclose(grid, [[np.nan, 1, 1, np.nan]])


def test_the_compression_title_follows_the_numbers():
    result = synthetic()  # |x| 1000-3000 times its median, |y| 10 times: compressed
    assert compression_title(result).endswith(
        "dim 447 (residual stream): compresses it at all 3 norms"
    )
    for norm in result.norms[2:]:
        for entry in norm.across_token:
            entry.compression_out = entry.compression_in * 2  # |y| spread wider than |x|
    assert compression_title(result).endswith("compresses it at 1 of 3 norms, expands it at 2")
    quiet = synthetic(with_spikes=False)  # a trajectory but no spike: no dimension named
    assert compression_title(quiet) == "Across-token compression: no spike to follow"


def test_every_spike_figure_says_when_there_is_no_spike(tmp_path: Path):
    result = synthetic(with_spikes=False)
    for plot in (plot_spike_ranks, plot_spike_order):
        figure = plot(result, new_figure())
        assert any("no spike in any norm" in t.get_text() for ax in figure.axes for t in ax.texts)
    for plot in (plot_trajectory, plot_compression, plot_census):
        ax = plot(result, new_figure().add_subplot())
        assert any("no spike in any norm" in t.get_text() for t in ax.texts), plot.__name__
    spike_figures = [e for e in figures_of(STATS) if e.when is not None and not e.option]
    paths = [entry.save(tmp_path, "model", result) for entry in spike_figures]  # drawn anyway
    assert [p.name for p in paths] == [entry.name for entry in spike_figures] and len(paths) == 7


def test_an_outlier_dimension_has_one_colour_in_both_panels():
    """Dims 3 and 5 stand out at the input (3 first) and at the output (5 first): each keeps
    its colour from one panel to the other, whatever its place in each legend."""
    result = synthetic()
    means_in = np.ones(8, dtype=np.float32)
    means_in[[3, 5]] = [90.0, 40.0]
    means_out = np.ones(8, dtype=np.float32)
    means_out[[3, 5]] = [40.0, 90.0]
    for i, n in enumerate(result.norms):  # dim 5 an output outlier at every norm, 3 at one
        n.dimensions = DimensionStats(
            tokens=TOKENS,
            k=2.0,
            mean_abs_in=means_in,
            max_abs_in=means_in,
            mean_abs_out=means_out,
            max_abs_out=means_out,
            outliers_in=[3, 5],
            outliers_out=[5, 3] if i == 0 else [5],
        )
    left, right = plot_outlier_dimensions(result).axes
    colours = [
        {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()}
        for ax in (left, right)
    ]
    assert [line.get_label() for line in right.get_lines()][:2] == ["dim 5", "dim 3"]
    assert colours[0]["dim 3"] == colours[1]["dim 3"] != colours[0]["dim 5"] == colours[1]["dim 5"]


@pytest.mark.parametrize("kind", ["massive", "outlier", "all"])
def test_an_empty_census_is_its_title_and_one_line_at_80_columns(kind: str):
    """No spike of a kind: the title and "none of this kind" each on one line, and no
    column headers squeezed into pieces beside the message."""
    lines = [line.strip() for line in render(census_table(synthetic(False), kind=kind), 80)]
    assert [line for line in lines if line] == [
        CENSUS_TITLES[kind],
        "none of this kind in any module",
    ]


def test_the_outlier_legend_covers_no_tick_label(tmp_path: Path):
    """Long names ("10.post_attn", rotated) reach further below the axes than a legend
    anchored at a fixed offset: the legend sits under every label."""
    result = synthetic()
    means = np.ones(8, dtype=np.float32)
    means[[1, 3, 5, 6]] = [90.0, 60.0, 40.0, 30.0]
    for i, n in enumerate(result.norms):
        n.name = f"model.layers.{10 + i}.post_attention_layernorm"
        n.dimensions = DimensionStats(
            tokens=TOKENS, k=2.0, mean_abs_in=means, max_abs_in=means, mean_abs_out=means,
            max_abs_out=means, outliers_in=[1, 3, 5, 6], outliers_out=[1, 3, 5, 6],
        )  # fmt: skip
    figure = plot_outlier_dimensions(result)
    save_titled(tmp_path, "model\ntext", [(figure, "dims", "dims.png")])  # as written
    legends = [figure.legends[0].get_window_extent()] if figure.legends else []
    legends += [ax.get_legend().get_window_extent() for ax in figure.axes if ax.get_legend()]
    labels = [t.get_window_extent() for ax in figure.axes for t in ax.get_xticklabels()]
    assert (
        legends
        and labels
        and "10.post_attn" in [t.get_text() for t in figure.axes[0].get_xticklabels()]
    )
    assert not any(legend.overlaps(label) for legend in legends for label in labels)
    assert all(legend.y1 < label.y0 for legend in legends for label in labels)
