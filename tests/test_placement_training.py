"""`lninspect placement --train`: a few steps of a very small model, checked step by step
against an independent training loop (plain autograd, torch's Adam and LambdaLR)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.cli.placement_options import PLACEMENT, placement_config, train_config
from lninspect.cli.shared import Given
from lninspect.files import dump_json
from lninspect.model.text import DOCUMENT_SEPARATOR, TRAINING_TEXT
from lninspect.placement.data import held_out_windows, load_tokens, sample_batch
from lninspect.placement.experiment import build_model
from lninspect.placement.training import lr_at, train_placement
from lninspect.render.placement_tables import placement_report
from lninspect.render.placement_train_plots import grads_figure, loss_figure, stream_figure
from lninspect.results.placement import PLACEMENT_SCHEMA, PlacementConfig, PlacementResult
from lninspect.results.placement_training import BETAS, EPS, TrainConfig

MODEL = PlacementConfig(
    layers=[2], d_model=16, heads=2, seeds=2, seq_len=16, batch=2, layouts=["pre", "post"]
)
TRAIN = TrainConfig(
    steps=6, warmup=3, lrs=[1e-3, 1e-2], eval_every=2, eval_windows=4, stats_every=3
)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """Five short documents: fewer than 20, so the last 1/20 of the tokens is held out."""
    path = tmp_path_factory.mktemp("text") / "docs.txt"
    shipped = TRAINING_TEXT.read_text(encoding="utf-8").split(DOCUMENT_SEPARATOR)
    path.write_text(DOCUMENT_SEPARATOR.join(d[:3000] for d in shipped[:5]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(text_file: Path) -> PlacementResult:
    return train_placement(MODEL, TRAIN, text_file)


def test_the_shipped_text_is_split_as_the_bundled_model_was_trained():
    tokens = load_tokens()
    assert (len(tokens.train), len(tokens.held_out)) == (410_559, 28_438)  # tiny's metrics
    assert tokens.vocab_size == 3072 and tokens.documents == 277


def test_learning_rate_rises_linearly_then_stays():
    assert [lr_at(step, 1.0, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_at(step, 0.5, 0) for step in range(3)] == [0.5, 0.5, 0.5]


def _reference_run(text_file: Path, placement: str, warmup: int, lr: float, seed: int) -> dict:
    """The same training written independently: plain autograd, Adam, LambdaLR."""
    tokens = load_tokens(text_file)
    config = replace(MODEL, vocab_size=tokens.vocab_size)
    model = build_model(config, placement, 2, torch.Generator().manual_seed(seed), dropout=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS, eps=EPS)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )
    data = torch.Generator().manual_seed(seed)
    seen: dict = {"loss": [], "grad": [], "ln_1": [], "ln_1_absmax": [], "stream": []}
    torch.manual_seed(seed)
    inputs: list[torch.Tensor] = []
    hook = model.blocks[0].ln_1.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    # the stream after the embeddings (block 0's input) and after each block
    outputs: list[torch.Tensor] = []
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, a: outputs.append(a[0]))]
    hooks += [b.register_forward_hook(lambda m, a, out: outputs.append(out)) for b in model.blocks]
    held = held_out_windows(tokens.held_out, TRAIN.eval_windows, config.seq_len)
    with torch.no_grad():
        model.eval()
        seen["held_out_0"] = float(
            sum(model.loss(c) * len(c) for c in held.split(config.batch)) / len(held)
        )
    for _ in range(TRAIN.steps):
        model.train()
        optimizer.zero_grad()
        loss = model.loss(sample_batch(tokens.train, config.batch, config.seq_len, data))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        seen["loss"].append(loss.item())
        seen["grad"].append(grads.double().norm().item())
        x = inputs[-1].detach().double()
        per_token = torch.sqrt(x.var(-1, correction=0) + 1e-5).flatten().numpy()
        seen["ln_1"].append(float(np.quantile(per_token, 0.5)))  # the median over tokens
        seen["ln_1_absmax"].append(x.abs().max().item())
        depth = outputs[-1 - len(model.blocks) :]  # this step's: embeddings, each block
        seen["stream"].append(
            [o.detach().double().var(-1, correction=0).mean().item() for o in depth]
        )
        optimizer.step()
        schedule.step()
    for handle in [hook, *hooks]:
        handle.remove()
    return seen


# ("pre", 3, 1e-3) is the first run of its layout: discovery's probe must not move its dropout
@pytest.mark.parametrize(
    "placement, warmup, lr", [("pre", 3, 1e-3), ("pre", 3, 1e-2), ("post", 0, 1e-3)]
)
def test_every_step_matches_an_independent_training_loop(trained, text_file, placement, warmup, lr):
    assert trained.training is not None
    run = trained.training.run(placement, warmup, lr)
    for seed in range(MODEL.seeds):
        expected = _reference_run(text_file, placement, warmup, lr, seed)
        np.testing.assert_allclose(run.train_loss[seed], expected["loss"], rtol=1e-5)
        np.testing.assert_allclose(run.grad_norm[seed], expected["grad"], rtol=1e-4)
        assert run.held_out_loss[seed, 0] == pytest.approx(expected["held_out_0"], rel=1e-5)
        # the watch's hooks ran on the training steps themselves, dropout on
        strided = [expected["ln_1"][step] for step in run.stats_steps]
        np.testing.assert_allclose(run.input_denominator["ln_1"][seed, :, 0], strided, rtol=1e-4)
        peaks = [expected["ln_1_absmax"][step] for step in run.stats_steps]
        assert run.absmax is not None and run.stream_var is not None
        np.testing.assert_allclose(run.absmax["ln_1"][seed, :, 0], peaks, rtol=1e-6)
        stream = [expected["stream"][step] for step in run.stats_steps]
        np.testing.assert_allclose(run.stream_var[seed], stream, rtol=1e-5)


def test_layer_gradients_and_their_shapes(trained):
    assert trained.training is not None
    run = trained.training.run("post", 3, 1e-2)
    assert run.layer_grad_norm["ffn_out"].shape == (2, 6, 2)  # (seeds, steps, layers)
    assert np.all(run.layer_grad_norm["block"] > run.layer_grad_norm["ffn_out"])
    assert np.all(run.grad_norm > run.layer_grad_norm["block"].max(axis=2))
    np.testing.assert_array_equal(run.ffn_out_last, run.layer_grad_norm["ffn_out"][:, :, -1])
    assert list(run.held_out_steps) == [0, 2, 4, 6] and list(run.stats_steps) == [0, 3]
    assert "ln_f" not in run.input_denominator  # post-LN has no final norm
    assert trained.training.run("pre", 3, 1e-2).input_denominator["ln_f"].shape == (2, 2, 1)


def test_grid_seeds_and_summaries(trained):
    training = trained.training
    assert training is not None
    cells = [(run.layout, run.warmup, run.lr) for run in training.runs]
    assert cells == [(p, w, lr) for p in ("pre", "post") for w in (3, 0) for lr in (1e-3, 1e-2)]
    for run in training.runs:
        assert run.diverged_at == [None, None]
        assert run.final_held_out is not None and run.best_held_out is not None
        np.testing.assert_allclose(run.final_held_out.values, run.held_out_loss[:, -1])
        assert np.all(run.best_held_out.values <= run.final_held_out.values)
        for seed, step in enumerate(run.steps_to_target):
            reached = run.held_out_loss[seed] <= training.target_loss
            assert step == (run.held_out_steps[reached][0] if reached.any() else None)
    assert trained.config.tokens == "text" and trained.config.vocab_size == 3072
    assert trained.runs == [] and math.isfinite(training.unigram_loss)


def test_divergence_is_marked_not_raised(text_file):
    result = train_placement(
        replace(MODEL, seeds=1), replace(TRAIN, lrs=[1e4], warmup=0), text_file
    )
    assert result.training is not None
    for run in result.training.runs:
        assert run.diverged_at[0] is not None, run.layout
        stop = run.diverged_at[0]
        assert np.all(np.isnan(run.train_loss[0, stop + 1 :]))
    console = Console(width=100, record=True)
    console.print(placement_report(result))
    assert "1/1 at" in console.export_text()
    for figure in (loss_figure(result), grads_figure(result), stream_figure(result)):
        figure.clear()


def test_json_round_trip_and_figures(trained):
    doc = json.loads(dump_json(trained.to_json()))
    assert doc["schema"] == PLACEMENT_SCHEMA and doc["runs"] == []
    run = doc["training"]["runs"][0]
    assert {
        "train_loss",
        "grad_norm",
        "layer_grad_norm",
        "held_out_loss",
        "input_denominator",
    } <= set(run)
    assert set(run["final_held_out"]) == {"values", "mean", "low", "high"}
    back = PlacementResult.from_json(doc)
    assert back.training is not None and trained.training is not None
    assert back.training.config == trained.training.config
    for a, b in zip(back.training.runs, trained.training.runs, strict=True):
        np.testing.assert_allclose(a.train_loss, b.train_loss)
        np.testing.assert_allclose(a.input_denominator["ln_2"], b.input_denominator["ln_2"])
        assert a.diverged_at == b.diverged_at and a.steps_to_target == b.steps_to_target
    for figure in (loss_figure(trained), grads_figure(trained), stream_figure(trained)):
        assert "lr" in figure.get_suptitle() or "warm-up" in figure.get_suptitle()
        panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
        assert all(ax.get_xlabel() and ax.get_title() for ax in panels)
        assert panels[0].get_ylabel()  # the others share its y axis
        figure.clear()


def test_loss_legend_names_every_curve_and_covers_none(trained):
    figure = loss_figure(trained)
    figure.canvas.draw()
    for ax in figure.axes:
        legend = ax.get_legend()
        labels = [t.get_text() for t in legend.get_texts()]
        assert any(label.startswith("training loss") for label in labels)  # the faint curves
        assert "95% interval over seeds" in labels
        box = legend.get_window_extent()
        for line in ax.lines:
            if line.get_transform() != ax.transData:
                continue  # the warm-up line and the divergence marks span the axes
            xy = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
            assert not any(box.contains(x, y) for x, y in xy), line.get_label()
    figure.clear()


def test_the_cli_takes_its_defaults_from_the_library():
    defaults = {option.name: option.default_value() for option in PLACEMENT}
    assert train_config(Given(defaults, PLACEMENT)) == TrainConfig()
    assert placement_config(Given(defaults, PLACEMENT)) == PlacementConfig()
    training = Given(defaults | {"train": True}, PLACEMENT)
    assert placement_config(training) == PlacementConfig.for_mode(True)
    assert placement_config(training).layouts == ["pre", "post"]


runner = CliRunner()


def test_cli_trains_and_writes_table_json_and_pngs(tmp_path: Path, text_file: Path):
    out, path = tmp_path / "report", tmp_path / "train.json"
    args = [
        "placement", "--train", "--file", str(text_file), "--layers", "2", "--d-model", "16",
        "--heads", "2", "--seeds", "1", "--seq-len", "16", "--batch", "2", "--steps", "4",
        "--warmup", "2", "--lr", "1e-3", "--eval-every", "2", "--stats-every", "2",
        "--placements", "pre,peri,dyt", "--log-dir", str(tmp_path / "logs"),
        "--plot", "--out", str(out), "--json", str(path),
    ]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Training: the norm layouts" in result.stdout and "steps to" in result.stdout
    assert "max |x|" in result.stdout and "stream var" in result.stdout
    assert all(label in result.stdout for label in ("pre-LN", "peri-LN", "DyT"))
    doc = json.loads(path.read_text())
    assert [run["layout"] for run in doc["training"]["runs"]] == ["pre"] * 2 + ["peri"] * 2 + [
        "dyt"
    ] * 2
    peri = doc["training"]["runs"][2]["input_denominator"]
    assert list(peri) == ["ln_1", "ln_1_post", "ln_2", "ln_2_post", "ln_f"]
    assert doc["training"]["config"]["steps"] == 4 and doc["config"]["layers"] == [2]
    for name in (
        "placement-train-loss.png",
        "placement-train-grads.png",
        "placement-train-stream.png",
        "placement-train-stream-var.png",
    ):
        with Image.open(out / name) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.shape[0] > 300 and pixels.std() > 10  # drawn, not blank
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        f"{layout}-warmup{w}-lr0.001-seed0" for layout in ("pre", "peri", "dyt") for w in (0, 2)
    )


def test_each_run_writes_a_watch_log_that_run_reads(tmp_path: Path, text_file: Path):
    logs = tmp_path / "logs"
    train = replace(TRAIN, steps=4, lrs=[1e-3], stats_every=2)
    result = train_placement(
        replace(MODEL, seeds=1, layouts=["peri"], baseline="peri"), train, text_file, log_dir=logs
    )
    assert result.training is not None
    log = logs / "peri-warmup3-lr0.001-seed0"
    lines = [json.loads(line) for line in (log / "lninspect-watch.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2]
    run = result.training.run("peri", 3, 1e-3)
    assert run.absmax is not None
    names = [norm["name"] for norm in lines[1]["norms"]]
    assert names[:2] == ["blocks.0.ln_1", "blocks.0.ln_1_post"] and names[-1] == "ln_f"
    for key, column in (("ln_1", 0), ("ln_2_post", 1)):
        (norm,) = [n for n in lines[1]["norms"] if n["name"] == f"blocks.{column}.{key}"]
        assert norm["absmax"] == pytest.approx(float(run.absmax[key][0, 1, column]), rel=1e-6)
        assert norm["input_denominator"]["q50"] == pytest.approx(
            float(run.input_denominator[key][0, 1, column]), rel=1e-6
        )
    read = runner.invoke(app, ["run", str(log)], env={"COLUMNS": "200"})
    assert read.exit_code == 0, read.output
    assert "2 records, steps 0–2" in read.stdout
    refused = runner.invoke(app, ["placement", "--log-dir", str(tmp_path / "x"), "--layers", "2"])
    assert refused.exit_code == 2 and "--log-dir" in refused.output


def test_cli_refuses_a_text_too_short_for_the_windows(tmp_path: Path):
    short = tmp_path / "short.txt"
    short.write_text("A few words only.")
    result = runner.invoke(app, ["placement", "--train", "--file", str(short)])
    assert result.exit_code == 2 and "--seq-len" in result.output
