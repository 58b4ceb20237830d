"""Figures of `lninspect stats`: synthetic results with planted values, and `stats --plot`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from PIL import Image
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.render.figures import DPI, new_figure
from lninspect.render.stats_plots import (
    MEAN_HEATMAP,
    SPIKE_RANKS,
    STATS_FIGURES,
    STD_HEATMAP,
    STD_PER_LAYER,
    WITHIN_TOKEN,
    plot_mean_heatmap,
    plot_spike_ranks,
    plot_std_heatmap,
    plot_std_per_layer,
    plot_within_token,
    save_stats_figures,
)
from lninspect.results import (
    InputInfo,
    InputStats,
    ModelInfo,
    NormStats,
    OrderStats,
    OutputStats,
    Spike,
    StatsResult,
)
from lninspect.summary import residual_growth

LAYERS, TOKENS = 3, 10
SPIKE_TOKEN = 4  # the planted largest spike: h.2.ln_2, dim 7, rank 1 before, 9 after


def spike(token: int, dim: int, z: float, rank_in: int, rank_out: int) -> Spike:
    return Spike(
        sequence=0,
        token=token,
        dim=dim,
        value=z * 0.5,
        z=z,
        out_value=1.0,
        rank_in=rank_in,
        rank_out=rank_out,
        massive=False,
    )


def norm_stats(
    name: str, layer: int | None, role: str, std: np.ndarray, with_spikes: bool
) -> NormStats:
    """One module: per-token std as given, mean alternating in sign, optional spikes."""
    sign = np.where(np.arange(TOKENS) % 2, 0.1, -0.1).astype(np.float32)
    mean = sign.reshape(1, TOKENS, *[1] * (std.ndim - 2)) * std
    stats = NormStats(
        name=name,
        type="LayerNorm",
        kind="layernorm",
        layer=layer,
        role=role,
        eps=1e-5,
        weight=None,
        input=InputStats(
            mean=mean,
            std=std,
            rms=std * 1.01,
            absmax=std * 3,
            absmax_dim=np.zeros_like(std, dtype=np.int64),
        ),
        output=OutputStats(mean=np.zeros_like(std), std=np.ones_like(std)),
    )
    if with_spikes:
        depth = layer if layer is not None else LAYERS
        rho = np.full((1, TOKENS), 0.9 - 0.1 * depth, dtype=np.float32)
        stats.order = OrderStats(
            within_token_spearman=rho,
            within_token_spearman_z=np.ones_like(rho),
            topk_retention=np.full_like(rho, 0.75),
            spike_count=np.ones_like(rho),
        )
        stats.spikes = [spike(SPIKE_TOKEN, 3, 10.0 + depth, 2, 2), spike(8, 5, -9.0, 3, 40)]
    return stats


def synthetic(with_spikes: bool = True) -> StatsResult:
    """3 layers of ln_1 / ln_2 and ln_f; std = 2^layer (ln_2: x1.5); a planted spike."""
    norms = []
    for layer in range(LAYERS):
        for leaf, role, factor in (("ln_1", "attn", 1.0), ("ln_2", "mlp", 1.5)):
            std = np.full((1, TOKENS), factor * 2.0**layer, dtype=np.float32)
            std[0, 0] *= 100  # a first token far larger, as in trained models
            norms.append(norm_stats(f"transformer.h.{layer}.{leaf}", layer, role, std, with_spikes))
    norms.append(
        norm_stats(
            "transformer.ln_f",
            None,
            "final",
            np.full((1, TOKENS), 16.0, dtype=np.float32),
            with_spikes,
        )
    )
    if with_spikes:
        norms[5].spikes.insert(0, spike(SPIKE_TOKEN, 7, -50.0, 1, 9))  # h.2.ln_2
    pieces = ["The", " quick", " <b>", " fox", " jumps", " over", " the", " lazy", " dog", "."]
    return StatsResult(
        model=ModelInfo(
            name="synthetic",
            source="module",
            cls="GPT2LMHeadModel",
            dtype="float32",
            device="cpu",
            num_layers=LAYERS,
            hidden_size=16,
        ),
        input=InputInfo(
            num_sequences=1, num_tokens=TOKENS, tokens=[pieces], token_ids=[list(range(TOKENS))]
        ),
        norms=norms,
        spike_z=6.0 if with_spikes else None,
        top_k=4 if with_spikes else None,
    )


def assert_png(path: Path, width: float, height: float) -> None:
    """A PNG of the figure's size in pixels, with something dark drawn on it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(width * DPI), round(height * DPI))
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank canvas
    assert (pixels < 128).mean() > 0.01


def test_all_figures_written_decode_and_are_not_blank(tmp_path: Path):
    paths = save_stats_figures(synthetic(), tmp_path)
    assert [p.name for p in paths] == list(STATS_FIGURES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(STATS_FIGURES)  # no temp files
    sizes = {
        STD_HEATMAP: (11, 5.0),
        MEAN_HEATMAP: (11, 5.0),
        STD_PER_LAYER: (10, 5.5),
        SPIKE_RANKS: (10, 7.5),
        WITHIN_TOKEN: (10, 7.5),
    }
    for path in paths:
        assert_png(path, *sizes[path.name])


def test_spike_figures_are_left_out_without_spikes(tmp_path: Path):
    paths = save_stats_figures(synthetic(with_spikes=False), tmp_path)
    assert [p.name for p in paths] == [STD_HEATMAP, MEAN_HEATMAP, STD_PER_LAYER]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_std_heatmap_shows_each_role_on_a_shared_log_scale():
    result = synthetic()
    figure = new_figure()
    plot_std_heatmap(result, figure)
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_ylabel() for ax in panels] == [
        "ln_1 (attn)\nlayer",
        "ln_2 (mlp)\nlayer",
        "final / other",
    ]
    grids = [np.asarray(ax.images[0].get_array()) for ax in panels]
    assert [g.shape for g in grids] == [(LAYERS, TOKENS), (LAYERS, TOKENS), (1, TOKENS)]
    np.testing.assert_allclose(grids[1][:, 1], 1.5 * 2.0 ** np.arange(LAYERS))
    assert grids[0][2, 0] == pytest.approx(400)  # the planted first token
    scale = panels[0].images[0].norm
    assert isinstance(scale, LogNorm) and all(ax.images[0].norm is scale for ax in panels)
    assert scale.vmin == pytest.approx(1) and scale.vmax == pytest.approx(600)
    colorbar = figure.axes[-1]
    assert "log" in colorbar.get_ylabel()
    assert [t.get_text() for t in panels[-1].get_xticklabels()][:3] == ["The", "quick", "<b>"]


def test_mean_heatmap_is_symmetric_about_zero():
    figure = new_figure()
    plot_mean_heatmap(synthetic(), figure)
    scale = figure.axes[0].images[0].norm
    assert scale.vmin == -scale.vmax and scale.vmax == pytest.approx(60)
    assert "0 = white" in figure.axes[-1].get_ylabel()


def test_std_per_layer_plots_medians_and_the_growth():
    result = synthetic()
    ax = plot_std_per_layer(result, new_figure().add_subplot())
    lines = {line.get_label(): line for line in ax.get_lines()}
    attn = lines["before attention (attn)"]
    np.testing.assert_allclose(attn.get_xdata(), range(LAYERS))
    np.testing.assert_allclose(attn.get_ydata(), 2.0 ** np.arange(LAYERS))  # median over tokens
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "final"]
    first, low, last, high = residual_growth(result)
    assert (first.name, last.name, low, high) == (
        "transformer.h.0.ln_1",
        "transformer.h.2.ln_1",
        1.0,
        4.0,
    )


def test_rank_plot_shows_the_planted_spike_token_only():
    ax = plot_spike_ranks(synthetic(), new_figure().add_subplot())
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    # At token 4: every module's (2, 2) spike and the planted (1, 9); token 8's (3, 40) is absent.
    assert sorted(map(tuple, points.tolist())) == [(1.0, 9.0)] + [(2.0, 2.0)] * (2 * LAYERS + 1)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "transformer.h.2.ln_2, dim 7" in texts and "z = -50" in texts and "×7" in texts
    assert ax.get_xscale() == "linear"  # ranks 1 to 9 do not span a decade


def test_within_token_plot_has_spearman_z_line_and_retention():
    figure = new_figure()
    plot_within_token(synthetic(), figure)
    top, bottom = figure.axes[:2]
    lines = {line.get_label(): line for line in top.get_lines()}
    np.testing.assert_allclose(lines["before the MLP (mlp)"].get_ydata(), [0.9, 0.8, 0.7])
    z_line = next(line for label, line in lines.items() if label.startswith("x vs z"))
    np.testing.assert_allclose(z_line.get_ydata(), 1.0)
    retention = {line.get_label(): line for line in bottom.get_lines()}
    np.testing.assert_allclose(retention["before attention (attn)"].get_ydata(), 0.75)
    assert "top-4" in bottom.get_ylabel()


def test_figures_survive_json_round_trip_with_nan_and_heads(tmp_path: Path):
    """Padding NaNs and a per-head norm (sequences, tokens, heads) still plot."""
    result = StatsResult.from_json(synthetic().to_json())
    result.norms[0].input.std[0, -2:] = math.nan
    head = norm_stats(
        "transformer.h.1.attn.q_norm",
        1,
        "qk",
        np.full((1, TOKENS, 4), 0.5, dtype=np.float32),
        with_spikes=False,
    )
    result.norms.insert(3, head)
    paths = save_stats_figures(result, tmp_path)
    assert len(paths) == len(STATS_FIGURES)
    figure = new_figure()
    plot_std_heatmap(result, figure)
    other = [ax for ax in figure.axes if ax.images][-1]
    assert [t.get_text() for t in other.get_yticklabels()] == ["h.1.attn.q_norm", "ln_f"]


def test_stats_plot_cli_writes_the_figures(tiny_model_dir: Path, tmp_path: Path):
    runner = CliRunner()
    env = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "figures"
    args = [
        "stats",
        str(tiny_model_dir),
        "--text",
        "The quick brown fox jumps over the lazy dog.",
        "--spikes",
        "--spike-z",
        "2",
        "--plot",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(STATS_FIGURES)
    for name in STATS_FIGURES:
        assert f"wrote {out / name}" in " ".join(result.stderr.split())
    again = runner.invoke(app, args, env=env)
    assert again.exit_code == 2 and "--force" in again.stderr
