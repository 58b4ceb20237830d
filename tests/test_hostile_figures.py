"""Hostile inputs in figures (issue 34): `$...$` in user text drawn as text, never as math;
a failed figure batch leaves no folder; models past 255 layers, and without known roles."""

from __future__ import annotations

import copy
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from matplotlib.text import Text
from torch import nn
from typer.testing import CliRunner

from lninspect import SpikeOptions, capture
from lninspect.cli import app
from lninspect.render import figures
from lninspect.render.catalog import save_grads_figures
from lninspect.render.dimension_plots import plot_outlier_dimensions
from lninspect.render.grad_plots import plot_grad_heatmap, plot_scale_vs_std
from lninspect.render.notebook import html_block
from lninspect.render.run_plots import plot_series_panels
from lninspect.render.stats_plots import plot_std_heatmap
from lninspect.results.one_text import GradsResult, StatsResult
from lninspect.results.watch import read_log
from tests.test_hostile_limits import RECORD, write_log
from tests.test_stats_plots import synthetic

MATH = ["price $\\x$", "$\\foo{$", "$a^{$b$"]
runner = CliRunner()


def test_dollar_text_in_tokens_names_and_titles_is_drawn_as_text(tmp_path: Path):
    result = synthetic()
    result.input.tokens[0][:3] = MATH
    result.norms[0] = replace(result.norms[0], name="transformer.h.0.$\\foo{$")
    drawn = [(plot_std_heatmap(result), "$\\x$", "a.png")]
    drawn.append((plot_outlier_dimensions(result), "b", "b.png"))  # norm names as ticks
    paths = figures.save_titled(tmp_path, "/models/$\\foo{$", drawn)  # a model's path
    assert all(p.stat().st_size > 0 for p in paths)


def test_our_own_math_and_log_ticks_stay_mathtext():
    figure = figures.new_figure()
    ax = figure.subplots()
    ax.plot([1, 100], [1, 1000])
    ax.set_yscale("log")
    ours = figures.allow_math(ax.set_ylabel(r"$W^{2,l}$"))
    user = ax.set_title("$\\x$")
    figures.png_bytes(figure)
    assert ours.get_parse_math() and not user.get_parse_math()
    assert all(t.get_parse_math() for t in ax.get_yticklabels() if t.get_text())


def test_a_notebook_figure_draws_dollar_text(tmp_path: Path):
    figure = figures.new_figure()
    figure.subplots().set_title("$\\x$")
    assert "data:image/png" in html_block("h", ["a"], [["1"]], figure)
    assert not any(t.get_parse_math() for t in figure.findobj(Text) if "\\x" in t.get_text())


def _log(tmp_path: Path, name: str) -> Path:
    quantiles = {k: 1.0 for k in ("q05", "q25", "q50", "q75", "q95", "max")}
    norm = {"name": name, "layer": 0, "role": "attn_in", "absmax": 1.0, "absmax_dim": 0}
    norm |= {k: quantiles for k in ("input_denominator", "output_std", "grad_scale")}
    records = [{**RECORD, "step": s, "norms": [norm]} for s in (1, 2)]
    return write_log(tmp_path / "$\\foo{$.jsonl", *records)


def test_run_plot_of_a_dollar_norm_and_file_name(tmp_path: Path):
    log, out = _log(tmp_path, "h.0.$\\x$"), tmp_path / "new" / "sub"
    result = runner.invoke(app, ["run", str(log), "--plot", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == 4


def test_a_failed_run_figure_batch_removes_the_folders_it_made(tmp_path: Path, monkeypatch):
    calls = []

    def fail_second(figure, **savefig):
        calls.append(figure)
        if len(calls) == 2:
            raise ValueError("a figure that cannot be drawn")
        return b"png"

    monkeypatch.setattr(figures, "png_bytes", fail_second)
    log, out = _log(tmp_path, "h.0.ln_1"), tmp_path / "new" / "sub"
    result = runner.invoke(app, ["run", str(log), "--plot", "--out", str(out)])
    assert result.exit_code == 1 and "unexpected ValueError" in result.stderr
    assert not (tmp_path / "new").exists()


# 3. Past 255 layers; no norm of a known role ---------------------------------------------


class Stack(nn.Module):
    """Norms of width 8 in a row, none in a block: every role is `other`."""

    def __init__(self, norms: int) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(64, 8), nn.Linear(8, 64)
        self.norms = nn.ModuleList(nn.LayerNorm(8) for _ in range(norms))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for norm in self.norms:
            x = x + norm(x)
        return self.head(x)


@pytest.fixture(scope="module")
def others() -> GradsResult:
    """A gradient run of 3 norms, all of role `other`, with spikes."""
    torch.manual_seed(0)
    model = Stack(3)
    with torch.enable_grad(), capture(model, grads=True, spikes=SpikeOptions()) as cap:
        model(torch.randint(0, 64, (1, 8))).logsumexp(-1).mean().backward()
    stats = cap.result()
    base = {f.name: getattr(stats, f.name) for f in fields(StatsResult) if f.name != "schema"}
    return GradsResult(**base, loss=1.0)


def test_a_model_without_known_roles_draws_or_says_so(others: GradsResult, tmp_path: Path):
    assert {n.role for n in others.norms} == {"other"}
    heatmap = plot_grad_heatmap(others)  # every norm drawn, in the panels of their groups
    rows = sum(len(ax.get_images()[0].get_array()) for ax in heatmap.axes if ax.get_images())
    assert rows == len(others.norms)
    assert len(save_grads_figures(others, tmp_path)) == 3  # the report's figures, with stats'


def test_figures_scale_past_255_layers(others: GradsResult, tmp_path: Path):
    deep = copy.copy(others)
    first = others.norms[0]
    deep.norms = [replace(first, name=f"h.{i}.ln_1", layer=i, role="attn") for i in range(300)]
    ax = plot_scale_vs_std(deep)
    colours = {tuple(c.to_rgba(c.get_array())[0]) for c in ax.collections}  # type: ignore
    assert len(colours) == 300  # one per layer
    assert len(plot_grad_heatmap(deep).axes[0].get_images()[0].get_array()) == 300


def test_run_figures_scale_past_255_layers(tmp_path: Path):
    quantiles = {k: 1.0 for k in ("q05", "q25", "q50", "q75", "q95", "max")}
    stats = {k: quantiles for k in ("input_denominator", "output_std", "grad_scale")}
    norms = [
        {"name": f"h.{i}.ln_1", "layer": i, "role": "attn_in", "absmax": 1.0, "absmax_dim": 0}
        | stats
        for i in range(300)
    ]
    log = write_log(
        tmp_path / "log.jsonl", *[{**RECORD, "step": s, "norms": norms} for s in (1, 2)]
    )
    figure = plot_series_panels(read_log(log), "input_denominator", "input std")
    assert len(figure.axes[0].lines) == 300
