"""The norm's map (--map): the sample against a float64 recomputation of ŷ = (x - c) / s at
the sampled coordinates, the reservoir's bounds, and the fits against an independent float64
fit (a dense search over α, A in closed form)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lninspect import capture
from lninspect.errors import LninspectError
from lninspect.mapfit import fit_map
from lninspect.options import MapOptions
from lninspect.render.catalog import BY_NAME, STATS, names_of, save_stats_figures
from lninspect.render.map_plots import (
    MAP_FITS,
    SCALE_SPREAD,
    map_grid_name,
    map_groups,
    plot_map_grid,
)
from lninspect.results import StatsResult
from tests.conftest import tiny_gpt2

FLOAT32 = 1e-5  # float32 x, c and s against float64: a few roundings of short sums


def inputs_float64(model: torch.nn.Module) -> tuple[dict[str, list[np.ndarray]], list]:
    """Every LayerNorm's input of every call, kept in float64, and the hook handles."""
    found: dict[str, list[np.ndarray]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            found[name] = []

            def keep(_: torch.nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                found[name].append(args[0].detach().double().numpy())

            handles.append(module.register_forward_pre_hook(keep))
    return found, handles


def run(model: torch.nn.Module, batches: list[torch.Tensor], options: MapOptions):
    found, handles = inputs_float64(model)
    try:
        with capture(model, maps=options) as cap, torch.no_grad():
            for ids in batches:
                model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return cap.result(), found


def test_each_pair_is_the_float64_map_at_its_coordinates() -> None:
    model = tiny_gpt2(n_layer=2)
    torch.manual_seed(3)
    batches = [torch.randint(1, 300, (2, 10)), torch.randint(1, 300, (3, 7))]
    result, inputs = run(model, batches, MapOptions(sample=True, size=200, per_token=3))
    for norm in result.norms:
        sample = norm.map
        assert sample is not None and sample.x.size == sample.y.size > 0
        # every token's 3 largest |x| fit in the tails' 100 slots: 2 x 10 + 3 x 7 = 41 tokens
        x = np.concatenate([a.reshape(-1, a.shape[-1]) for a in _by_sequence(inputs[norm.name])])
        assert sample.tails == 100
        lengths = _lengths(inputs[norm.name])
        rows = [
            _row(lengths, int(s), int(t))
            for s, t in zip(sample.sequence, sample.token, strict=True)
        ]
        token = x[rows]  # (pairs, d) float64
        centre, scale = token.mean(-1), np.sqrt(token.var(-1) + 1e-5)
        at = token[np.arange(len(rows)), sample.dim]
        np.testing.assert_allclose(sample.x, at, rtol=FLOAT32, atol=1e-6)
        expected = (at - centre) / scale
        np.testing.assert_allclose(sample.y, expected, rtol=FLOAT32, atol=FLOAT32)
        # the tails are each token's largest |x|: none of the token's others beats the third
        third = np.sort(np.abs(token[: sample.tails]), axis=-1)[:, -3]
        assert (np.abs(sample.x[: sample.tails]) >= third * (1 - 1e-6)).all()
        assert set(sample.token[sample.tails :]) <= set(range(10))


def _by_sequence(calls: list[np.ndarray]) -> list[np.ndarray]:
    return [seq for call in calls for seq in call]  # (tokens, d) each


def _lengths(calls: list[np.ndarray]) -> list[int]:
    return [call.shape[1] for call in calls for _ in range(call.shape[0])]


def _row(lengths: list[int], sequence: int, token: int) -> int:
    return sum(lengths[:sequence]) + token


def test_the_sample_stays_its_size_and_draws_uniformly_over_calls() -> None:
    """Many calls of different sizes: the uniform half keeps `size / 2` pairs, and each
    call's share of them follows its share of the elements (the weighted keys)."""
    model = tiny_gpt2(n_layer=1)
    torch.manual_seed(4)
    batches = [torch.randint(1, 300, (1, 8)) for _ in range(20)]
    batches += [torch.randint(1, 300, (4, 40))]  # 160 tokens: half of the 320
    result, _ = run(model, batches, MapOptions(sample=True, size=800, per_token=1))
    for norm in result.norms:
        sample = norm.map
        assert sample is not None
        uniform = sample.sequence[sample.tails :]
        assert sample.x.size == 320 + 400 and uniform.size == 400
        share = float((uniform >= 20).mean())  # the last call's 4 sequences
        assert abs(share - 0.5) < 0.1  # 400 draws: sd of the share 0.025
        assert sample.tails == 320 and sample.x[: sample.tails].size == 320


def test_padding_is_never_sampled() -> None:
    model = tiny_gpt2(n_layer=1)
    ids = torch.randint(1, 300, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with capture(model, maps=MapOptions(sample=True, size=400), attention_mask=mask) as cap:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    for norm in cap.result().norms:
        assert norm.map is not None
        pad = (norm.map.sequence == 1) & (norm.map.token >= 5)
        assert not pad.any() and norm.map.tails == 2 * (9 + 5)


def test_the_map_in_json_and_older_documents_without_it() -> None:
    model = tiny_gpt2(n_layer=1)
    result, _ = run(model, [torch.randint(1, 300, (1, 12))], MapOptions(sample=True, size=64))
    doc = json.loads(json.dumps(result.to_json()))
    keys = {"alpha", "amplitude", "tanh_error", "line_error", "x", "y", "token"}
    assert keys <= set(doc["norms"][0]["map"])
    again = StatsResult.from_json(doc)
    np.testing.assert_array_equal(again.norms[0].map.x, result.norms[0].map.x)
    assert again.norms[0].map.alpha == result.norms[0].map.alpha
    doc["schema"] = "lninspect.stats/3"
    for norm in doc["norms"]:
        del norm["map"], norm["scale"]
    assert all(n.map is None for n in StatsResult.from_json(doc).norms)


def test_a_bad_size_names_the_parameter() -> None:
    with pytest.raises(LninspectError, match="map_size=1"):
        MapOptions(sample=True, size=1)


def dense_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """An independent fit: α over a dense log grid (then a denser one around the best),
    A = Σ y t / Σ t² for each; returns α, A, tanh error, line error."""

    def residual(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.tanh(np.outer(alphas, x))  # (alphas, n)
        amplitude = (t @ y) / (t * t).sum(1)
        return ((y - amplitude[:, None] * t) ** 2).sum(1), amplitude

    coarse = np.geomspace(1e-4, 1e4, 4001) / np.abs(x).max()
    best = int(np.argmin(residual(coarse)[0]))
    fine = np.geomspace(coarse[max(best - 2, 0)], coarse[min(best + 2, 4000)], 20001)
    errors, amplitude = residual(fine)
    i = int(np.argmin(errors))
    slope = (x @ y) / (x @ x)
    energy = y @ y
    line = math.sqrt(((y - slope * x) ** 2).sum() / energy)
    return float(fine[i]), float(amplitude[i]), math.sqrt(errors[i] / energy), line


@pytest.mark.parametrize("alpha, amplitude, noise", [(0.8, 2.0, 0.05), (0.05, 3.0, 0.2)])
def test_the_fits_match_an_independent_dense_search(
    alpha: float, amplitude: float, noise: float
) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 1500), rng.normal(0, 12, 300)])
    y = amplitude * np.tanh(alpha * x) + noise * rng.normal(size=x.size)
    fit = fit_map(x, y)
    want = dense_fit(x, y)
    got = (fit.alpha, fit.amplitude, fit.tanh_error, fit.line_error)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert fit.tanh_error < fit.line_error


def test_a_line_fits_a_linear_map_as_well() -> None:
    x = np.linspace(-3, 3, 301)
    fit = fit_map(x, 0.5 * x)
    assert fit.line_error < 1e-12 and fit.tanh_error < 1e-4 and fit.slope == pytest.approx(0.5)
    assert math.isnan(fit_map(np.zeros(3), np.zeros(3)).alpha)


def test_the_map_figures_decode_and_are_not_blank(tmp_path: Path) -> None:
    model = tiny_gpt2(n_layer=2)
    result, _ = run(model, [torch.randint(1, 300, (2, 16))], MapOptions(sample=True, size=256))
    paths = save_stats_figures(result, tmp_path)
    grids = {map_grid_name(g) for g, _ in map_groups(result)}
    assert {SCALE_SPREAD, MAP_FITS, *grids} <= {p.name for p in paths}
    assert grids <= set(names_of(STATS)) and len(grids) == 3  # before attention, the MLP; final
    for name in grids:  # the catalog titles each grid by its group
        assert BY_NAME[name].title.startswith("The norm's map, ")
    for path in (p for p in paths if p.name.startswith(("map-", "scale-"))):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 10 and (pixels < 128).mean() > 0.01
    grid = plot_map_grid(*map_groups(result)[0])
    panel = grid.axes[0]
    assert panel.get_title() == "layer 0" and panel.texts[0].get_text().startswith("α=")
    assert len(panel.lines) == 2 and len(panel.collections) == 2  # fits; others, first token


def test_a_qk_group_is_two_lines_and_its_panels_name_the_module(tmp_path: Path) -> None:
    """Gemma 3 has q_norm and k_norm at every layer, one group (query / key norms): the
    by-layer figures draw each module as its own line, and the map grid names it."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from lninspect.render.map_plots import plot_scale_spread
    from lninspect.streams import groups_present

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        num_hidden_layers=3, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, intermediate_size=64, vocab_size=300, max_position_embeddings=64,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    with capture(model, maps=MapOptions(sample=True, size=64)) as cap, torch.no_grad():
        model(input_ids=torch.randint(1, 300, (1, 12)))
    result = cap.result()
    ((group, norms),) = [(g, n) for g, n in map_groups(result) if g.role == "qk"]
    assert len(norms) == 6  # q and k at 3 layers
    titles = [ax.get_title() for ax in plot_map_grid(group, norms).axes]
    assert titles[:2] == ["layer 0 · q_norm", "layer 0 · k_norm"]
    figure = plot_scale_spread(result)
    colour = f"C{groups_present(result).index(group)}"  # the figure's colour of the group
    lines = [ln for ln in figure.axes[0].get_lines() if ln.get_color() == colour]
    assert len(lines) == 4  # cv and cv_rest, for q_norm and for k_norm
    assert all(list(ln.get_xdata()) == [0.0, 1.0, 2.0] for ln in lines)


def test_the_report_finding_says_when_no_map_is_far_from_a_line() -> None:
    from dataclasses import replace

    from lninspect.render.map_tables import map_finding

    torch.manual_seed(5)
    result, _ = run(tiny_gpt2(n_layer=2), [torch.randint(1, 300, (1, 16))], MapOptions(True))
    for norm in result.norms:  # every map nearly a line
        assert norm.map is not None
        norm.map = replace(norm.map, tanh_error=0.19, line_error=0.2)
    assert "no norm's map is far from a line" in map_finding(result)
    first = result.norms[1]
    assert first.map is not None
    first.map = replace(first.map, tanh_error=0.1, line_error=0.8, alpha=0.05)
    sentence = map_finding(result)
    assert sentence.startswith(f"most S-shaped at {first.name} (") and "far from" not in sentence
    assert "0.1 for A·tanh(αx) against 0.8 for a line, α = 0.05" in sentence
