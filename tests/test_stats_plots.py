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
from lninspect.derived import residual_growth
from lninspect.render.catalog import STATS, names_of, save_stats_figures
from lninspect.render.figures import DPI, new_figure
from lninspect.render.stats_plots import (
    plot_mean_heatmap,
    plot_std_heatmap,
    plot_std_per_layer,
)
from lninspect.results import (
    AcrossToken,
    CensusEntry,
    ChangedBy,
    DimensionStats,
    InputInfo,
    InputStats,
    ModelInfo,
    NormStats,
    OrderStats,
    OutputStats,
    PositionCount,
    Spike,
    StatsResult,
    TokenCount,
    Trajectory,
)

LAYERS, TOKENS = 3, 10
STATS_FIGURES = names_of(STATS, asked=False)  # the map's only with --map (test_map.py)
SPIKE_TOKEN = 4  # the planted largest spike: h.2.ln_2, dim 7, rank 1 before, 9 after


def spike(token: int, dim: int, z: float, rank_in: int, rank_out: int) -> Spike:
    return Spike(
        sequence=0,
        token=token,
        head=None,
        dim=dim,
        value=z * 0.5,
        out_value=1.0,
        z=z,
        massive=False,
        rank_in=rank_in,
        rank_centred=rank_in,
        rank_weighted=rank_out,
        rank_out=rank_out,
        changed_by="weight" if rank_out != rank_in else None,
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
            spikes=2,
            ranked=2,
            rank_kept=0.5,
            pairs=0,
            pairs_kept=float("nan"),
            changed_by=ChangedBy(centre=0, weight=1, bias=0),
            spike_count=np.ones_like(rho, dtype=np.int64),
            topk_retention=np.full_like(rho, 0.75),
        )
        stats.across_token = [
            AcrossToken(dim=7, rho=0.9, rho_abs=0.9, compression_in=8.0, compression_out=2.0)
        ]
        stats.census = [
            CensusEntry(
                dim=7,
                count=2,
                max_abs=25.0,
                first_token_share=0.0,
                positions=[PositionCount(4, 8, 2)],
                tokens=[TokenCount(" jumps", 2)],
            )
        ]
        stats.spikes = [spike(SPIKE_TOKEN, 3, 10.0 + depth, 2, 2), spike(8, 5, -9.0, 3, 40)]
        stats.spikes[0].massive = True  # one massive activation per norm, for the roles figure
        mean_abs = np.linspace(0.5, 1.5, 16)
        mean_abs[3] = 20.0 + depth  # an outlier dimension at every norm
        stats.dimensions = DimensionStats(
            tokens=TOKENS,
            k=3.0,
            mean_abs_in=mean_abs,
            max_abs_in=mean_abs * 4,
            mean_abs_out=mean_abs / 10,
            max_abs_out=mean_abs / 2,
            outliers_in=[3],
            outliers_out=[3],
        )
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
        trajectory=Trajectory(
            dims=[7],
            norms=[n.name for n in norms],
            max_abs_in=np.array([[2.0 ** (i / 2) for i in range(len(norms))]]),
            max_abs_out=np.ones((1, len(norms))),
        )
        if with_spikes
        else None,
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
        "stats-std-heatmap.png": (11, 5.0),
        "stats-mean-heatmap.png": (11, 5.0),
        "stats-std-per-layer.png": (12, 5.0),  # one panel: the residual stream
        "stats-spike-ranks.png": (13, 6),  # the table of counts between the panels
        "stats-spike-order.png": (11, 7.5),
        "stats-spike-trajectory.png": (11, 6),
        "stats-spike-compression.png": (11, 6),
        "stats-spike-census.png": (11, 6),
        "stats-spike-roles.png": (11, 5),
        "stats-outlier-dims.png": (12, 5),
        "scale-spread-by-layer.png": (9, 6),
    }
    for path in paths:
        assert_png(path, *sizes[path.name])


def test_spike_figures_are_left_out_without_spikes(tmp_path: Path):
    paths = save_stats_figures(synthetic(with_spikes=False), tmp_path)
    assert [p.name for p in paths] == [
        "stats-std-heatmap.png",
        "stats-mean-heatmap.png",
        "stats-std-per-layer.png",
        "scale-spread-by-layer.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_std_heatmap_shows_each_role_on_a_shared_log_scale():
    result = synthetic()
    figure = new_figure()
    plot_std_heatmap(result, figure)
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title(loc="left") for ax in panels] == [
        "ln_1 (before attention)",
        "ln_2 (before the MLP)",
        "outside the blocks",
    ]
    assert [ax.get_ylabel() for ax in panels] == ["layer", "layer", ""]
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


def long_text(tokens: int = 279) -> StatsResult:
    """The synthetic result over `tokens` tokens: every token as token 1, but the first."""
    result = synthetic(with_spikes=False)
    for norm in result.norms:
        for side, fields in ((norm.input, ("mean", "std", "rms", "absmax")), (norm.output, ())):
            for field in fields:
                array = getattr(side, field)
                wide = np.repeat(array[:, 1:2], tokens, axis=1)
                wide[:, 0] = array[:, 0]
                setattr(side, field, wide)
        norm.input.absmax_dim = np.zeros_like(norm.input.std, dtype=np.int64)
        norm.output.mean = norm.output.std = np.ones_like(norm.input.std)
    result.input.tokens = [["The", *[" fox"] * (tokens - 1)]]
    result.input.num_tokens = tokens
    return result


def test_a_one_token_feature_is_named_above_a_long_heatmap():
    result = long_text()
    figure = plot_std_heatmap(result, new_figure(11, 5))
    top = figure.axes[0]
    (marks,) = top.child_axes  # a secondary x axis on the first panel
    assert list(marks.get_xticks()) == [0]
    assert [t.get_text() for t in marks.get_xticklabels()] == ["▼"]
    assert "t0 'The' (6 of 7)" in figure.axes[2].get_xlabel()  # ln_f's first token: no larger
    grid = np.asarray(top.images[0].get_array())
    assert grid.shape == (LAYERS, 279)  # the data as it is: no column widened
    plain = synthetic(with_spikes=False)
    for norm in plain.norms:
        norm.input.std = norm.input.rms = np.ones_like(norm.input.std)
    assert not plot_std_heatmap(plain, new_figure()).axes[0].child_axes  # nothing stands out


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
    attn = lines["before attention (ln_1)"]
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
    panels = {ax.get_title(loc="left"): ax for ax in figure.axes if ax.images}
    q = panels["q_norm (query / key norms)"]  # a panel of its own, one row per layer
    assert [t.get_text() for t in q.get_yticklabels()] == ["1"]
    assert np.asarray(q.images[0].get_array()).shape == (1, TOKENS)  # heads reduced, not tokens
    assert [t.get_text() for t in panels["outside the blocks"].get_yticklabels()] == ["final"]


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
