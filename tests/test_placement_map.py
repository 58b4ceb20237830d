"""`placement --train --map`: each norm's map fitted at the start and the end of training,
where each fit lands (norm key, layer, start / end), DyT left out, NaN after a divergence,
the JSON, the table, the figure and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.files import dump_json
from lninspect.mapfit import fit_map
from lninspect.norms.discovery import find_norms
from lninspect.placement.data import held_out_windows, load_tokens
from lninspect.placement.experiment import build_model
from lninspect.placement.maps import map_fits
from lninspect.placement.refgpt import DynamicTanh
from lninspect.placement.training import train_placement
from lninspect.render.placement_map_plots import map_figure
from lninspect.render.placement_tables import placement_report
from lninspect.results.placement import PlacementResult
from lninspect.results.placement_training import MAP_AT, MAP_FITS, map_ratio
from tests.test_map import inputs_float64
from tests.test_placement_training import MODEL, TRAIN, text_file  # noqa: F401 (fixture)

CONFIG = replace(MODEL, seeds=1, layouts=["pre", "post", "dyt"])
TRAINING = replace(TRAIN, lrs=[1e-2], maps=True)


@pytest.fixture(scope="module")
def trained(text_file: Path) -> PlacementResult:  # noqa: F811
    return train_placement(CONFIG, TRAINING, text_file)


def initial_model(layout: str, text_file: Path) -> tuple[torch.nn.Module, torch.Tensor]:  # noqa: F811
    """Seed 0's initial weights of `layout` and the held-out windows, as the run had them."""
    tokens = load_tokens(text_file)
    config = replace(CONFIG, tokens="text", vocab_size=tokens.vocab_size)
    layers = config.layers[0]
    model = build_model(config, layout, layers, torch.Generator().manual_seed(0), TRAIN.dropout)
    windows = held_out_windows(tokens.held_out, TRAIN.eval_windows, config.seq_len)
    return model.eval(), windows


def test_the_start_fits_the_initial_models_map_where_the_sample_lies(trained, text_file):  # noqa: F811
    """At step 0 the model is the seed's initial one: the run's fits are those of its map on
    the held-out windows, each at its norm key and layer; and the tanh fit of the float64
    map of every element of the windows has the error of the fit of the sample, within
    what a 4096-pair sample (half of it each token's largest |x|) leaves."""
    assert trained.training is not None
    for run in trained.training.runs:
        if run.layout == "dyt":
            assert run.map_fit("alpha") is None and map_ratio(run, "ln_1") is None
            continue
        model, windows = initial_model(run.layout, text_file)
        layers = CONFIG.layers[0]
        norms = find_norms(model, include=(DynamicTanh,))
        again = map_fits(model, norms, windows, CONFIG.batch, layers)  # key -> (fits, L)
        for i, fit in enumerate(MAP_FITS):
            recorded = run.map_fit(fit)
            assert recorded is not None and set(recorded) == set(again)
            for key, values in again.items():
                np.testing.assert_array_equal(recorded[key][0, MAP_AT.index("start")], values[i])
        found, handles = inputs_float64(model)
        with torch.no_grad():
            model.loss(windows)
        for handle in handles:
            handle.remove()
        for name, calls in found.items():
            key, layer = name.rsplit(".", 1)[-1], int(name.split(".")[1]) if "." in name else 0
            x = np.concatenate([c.reshape(-1, c.shape[-1]) for c in calls])  # (tokens, d)
            y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
            every = fit_map(x.ravel(), y.ravel())
            tanh, line = run.map_fit("tanh_error"), run.map_fit("line_error")
            assert tanh is not None and line is not None
            start = MAP_AT.index("start")
            assert abs(tanh[key][0, start, layer] - every.tanh_error) < 0.1 * every.tanh_error
            assert abs(line[key][0, start, layer] - every.line_error) < 0.1 * every.line_error


def test_the_end_is_the_trained_model_and_nan_after_a_divergence(trained, text_file):  # noqa: F811
    assert trained.training is not None
    for run in trained.training.runs:
        alpha = run.map_fit("alpha")
        if alpha is None:
            continue
        start, end = alpha["ln_1"][0].T  # (layers,) each
        assert np.isfinite(start).all() and np.isfinite(end).all()
        assert not np.allclose(start, end)  # the model moved
        assert set(alpha) == {"ln_1", "ln_2", "ln_f"} if run.layout == "pre" else {"ln_1", "ln_2"}
    diverged = train_placement(
        replace(CONFIG, layouts=["pre"]), replace(TRAINING, lrs=[1e4], warmup=0), text_file
    )
    assert diverged.training is not None
    for run in diverged.training.runs:
        tanh = run.map_fit("tanh_error")
        assert tanh is not None and run.diverged_at[0] is not None
        assert np.isfinite(tanh["ln_1"][0, 0]).all() and np.isnan(tanh["ln_1"][0, 1]).all()


def test_json_table_and_figure(trained, tmp_path: Path):
    doc = json.loads(dump_json(trained.to_json()))
    back = PlacementResult.from_json(doc)
    assert back.training is not None and trained.training is not None
    for a, b in zip(back.training.runs, trained.training.runs, strict=True):
        for key in ("ln_1", "ln_2"):
            ratios = [map_ratio(a, key), map_ratio(b, key)]
            assert (ratios[0] is None) == (ratios[1] is None)
            if ratios[0] is not None:
                np.testing.assert_array_equal(ratios[0], ratios[1])
    console = Console(width=120, record=True)
    console.print(placement_report(trained))
    text = console.export_text()
    assert "The norm's map at the start → the end of training" in text
    assert text.count("→") >= 2 * 2 * 2  # pre and post, two warm-ups, block 1 and block L
    figure = map_figure(trained)
    titles = " ".join(ax.get_title() for ax in figure.axes)
    assert "DyT: no s, no map" in titles and figure.axes[0].get_ylabel()
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert any(label.startswith("pre-LN") for label in labels)
    assert not any(label.startswith("DyT") for label in labels)
    figure.savefig(tmp_path / "map.png")
    assert Image.open(tmp_path / "map.png").size[0] > 800


def test_cli_map_only_with_train_and_its_figure(tmp_path: Path, text_file: Path):  # noqa: F811
    env = {"HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    refused = CliRunner().invoke(app, ["placement", "--map"], env=env)
    assert refused.exit_code == 2 and "--map" in refused.output and "--train" in refused.output
    out = tmp_path / "figures"
    args = ["placement", "--train", "--map", "--file", str(text_file), "--layers", "2"]
    args += ["--d-model", "16", "--heads", "2", "--seq-len", "16", "--batch", "2"]
    args += ["--steps", "2", "--eval-every", "1", "--seeds", "1", "--lr", "1e-3"]
    done = CliRunner().invoke(app, [*args, "--plot", "--out", str(out), "--quiet"], env=env)
    assert done.exit_code == 0, done.output
    assert (out / "placement-train-map.png").is_file()


def test_the_stream_figure_names_what_the_norms_divide_by(trained):
    """rms under --norm rmsnorm (DyT's module is watched as a LayerNorm: std), else std."""
    from lninspect.render.placement_train_plots import stream_figure

    rms = replace(trained, config=replace(trained.config, norm="rmsnorm"))
    for result, title, first in ((trained, "The std of", "std"), (rms, "The rms/std of", "rms")):
        figure = stream_figure(result)
        assert figure.get_suptitle().startswith(title)
        assert f"per-token {first} of" in figure.axes[0].get_ylabel()  # pre-LN's panel
        figure.clear()
