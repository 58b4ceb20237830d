"""Figures of issue 15: nothing hidden under a legend, integer layers, outside groups side by
side, and a figure with nothing to show saying so."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from lninspect.comparison import compare_results
from lninspect.jobs import run_grads
from lninspect.options import RunOptions
from lninspect.render.compare_plots import plot_compare_layers
from lninspect.render.figures import figure_of
from lninspect.render.grad_plots import plot_grad_heatmap, plot_param_grads, plot_scale_vs_std
from lninspect.render.stats_plots import plot_mean_heatmap, plot_std_heatmap, plot_std_per_layer
from lninspect.results import GradsResult
from lninspect.statistics import SUMMARIES

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def result(tiny_model_dir: Path) -> GradsResult:
    return run_grads(RunOptions(model=str(tiny_model_dir), text=TEXT, device="cpu"))


@pytest.fixture
def all_nan(result: GradsResult) -> GradsResult:
    broken = copy.deepcopy(result)
    for norm in broken.norms:
        for stats in (norm.input, norm.grad):
            for statistic, value in stats.items():
                if value is not None and value.dtype.kind == "f":
                    setattr(stats, statistic.field, np.full_like(value, np.nan))
    for param in broken.params:
        param.grad_norm = float("nan")
    return broken


def texts(ax) -> str:
    return " ".join(t.get_text() for t in ax.texts)


def test_the_std_legend_sits_beside_the_axes(result: GradsResult):
    ax = plot_std_per_layer(result)
    figure = figure_of(ax)
    figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 > ax.get_window_extent().x1  # right of the axes, never over the curves


def test_scale_vs_std_colours_whole_layers(result: GradsResult):
    ax = plot_scale_vs_std(result)
    bar = figure_of(ax).axes[-1]
    labels = [t.get_text() for t in bar.get_yticklabels()]
    assert labels == ["0", "1", "final"]  # 2 layers and the final norm, no 0.25 ... 1.75
    assert not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]


def test_outside_groups_are_side_by_side(result: GradsResult):
    ax = plot_param_grads(result)
    outside = [line for line in ax.lines if "outside the blocks" in line.get_label()]
    xs = [float(np.asarray(line.get_xdata())[0]) for line in outside]
    assert len(outside) >= 3 and len(set(xs)) == len(xs)  # final weight and bias apart
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "outside"


def test_all_nan_statistics_say_so(all_nan: GradsResult):
    assert "no finite gradient scale" in texts(plot_scale_vs_std(all_nan))
    assert "no finite input std" in texts(plot_std_per_layer(all_nan))
    assert "no finite, non-zero parameter gradient" in texts(plot_param_grads(all_nan))
    for heatmap in (plot_std_heatmap(all_nan), plot_mean_heatmap(all_nan)):
        assert all("nothing finite to show" in texts(ax) for ax in heatmap.axes)  # no bar


def _ticks(figure) -> list[tuple[float, str]]:
    ax = figure.axes[len(SUMMARIES) - 1]
    return [
        (float(x), t.get_text()) for x, t in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)
    ]


def _final_xs(figure) -> set[float]:
    """x of the final norm's markers ('^'), and of every other marker."""
    lines = figure.axes[0].lines
    return {float(x) for line in lines if line.get_marker() == "^" for x in line.get_xdata()}


def test_compare_layers_whole_layers_and_a_labelled_final(result: GradsResult):
    compared = compare_results([result, result], ["A", "B"])
    figure = plot_compare_layers(compared)
    assert _ticks(figure) == [(0.0, "0"), (1.0, "1"), (2.0, "final")]  # no 0.25 ... 1.75
    others = {float(x) for line in figure.axes[0].lines if line.get_marker() != "^"
              for x in line.get_xdata()}  # fmt: skip
    assert _final_xs(figure) == {2.0} and 2.0 not in others


def test_compare_by_depth_keeps_the_final_norm_off_the_last_block(result: GradsResult):
    renamed = copy.deepcopy(result)
    for norm in renamed.norms:
        norm.name = f"other.{norm.name}"  # no name in common: matched by relative depth
    compared = compare_results([result, renamed], ["A", "B"])
    assert compared.matching == "relative depth"
    figure = plot_compare_layers(compared)
    ticks = _ticks(figure)
    assert ticks[-1][1] == "final" and ticks[-1][0] > 1.0
    assert [t for _, t in ticks[:-1]] == ["0", "0.25", "0.5", "0.75", "1"]
    assert _final_xs(figure) == {ticks[-1][0]}


def test_grad_heatmap_names_a_one_token_feature(result: GradsResult):
    planted = copy.deepcopy(result)
    for norm in planted.norms:
        norm.grad.input_norm[0, 1] = 1e3 * np.nanmax(norm.grad.input_norm)  # token 1 stands out
    figure = plot_grad_heatmap(planted)
    (marks,) = figure.axes[0].child_axes
    assert list(marks.get_xticks()) == [1]
    assert [t.get_text() for t in marks.get_xticklabels()] == ["▼"]
    rows, piece = len(planted.norms), planted.input.tokens[0][1]
    assert f"t1 {piece!r} ({rows} of {rows})" in figure.axes[len(figure.axes) - 2].get_xlabel()
