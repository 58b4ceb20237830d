"""`lninspect placement`: Xiong et al. 2020's predictions on seeded runs, JSON, tables, CLI."""

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
from lninspect.errors import LninspectError
from lninspect.files import dump_json
from lninspect.placement.experiment import build_model, measure_gradients, run_placement
from lninspect.placement.layouts import LAYOUTS
from lninspect.render.format import fmt
from lninspect.render.placement_plots import layers_figure, sweep_figure
from lninspect.render.placement_tables import placement_report
from lninspect.results.placement import (
    GRAD_KEYS,
    PLACEMENT_SCHEMA,
    PlacementConfig,
    PlacementResult,
    stream_growth,
)

# d >= 128 as the theory needs; 4 seeds of 4 x 128 random tokens; the same seeds everywhere.
THEORY = PlacementConfig(layers=[6, 12], d_model=128, heads=4, seeds=4, layouts=["pre", "post"])
TINY = PlacementConfig(
    layers=[2, 3], d_model=32, heads=2, seeds=2, seq_len=16, batch=2, vocab_size=300
)


@pytest.fixture(scope="module")
def xavier() -> PlacementResult:
    return run_placement(THEORY)


@pytest.fixture(scope="module")
def gpt2() -> PlacementResult:
    return run_placement(replace(THEORY, init="gpt2"))


# Theorem 1 and Lemma 2, with --init xavier -------------------------------------------------


def test_post_ln_last_layer_gradient_is_larger_and_the_ratio_grows_with_depth(xavier):
    rows = xavier.sweep
    assert [row.layers for row in rows] == [6, 12]
    assert all(row.last["post"].at()[0] > 1.5 * row.last["pre"].at()[0] for row in rows)
    assert all(row.ratio["post"].at()[1] > 1.3 for row in rows)  # the interval's low end
    assert set(rows[0].ratio) == {"post"}  # the baseline is not divided by itself
    growth = rows[1].ratio["post"].at()[0] / rows[0].ratio["post"].at()[0]
    assert 1.2 < growth < 1.7, growth  # Theorem 1's bounds: sqrt(12 / 6) = 1.41
    exponent = xavier.growth_exponent["post"]
    assert exponent.at()[1] < 0.5 + 0.2 and exponent.at()[2] > 0.3


def test_post_ln_last_layer_is_depth_independent_and_pre_ln_falls_by_sqrt2(xavier):
    post = xavier.run("post", 12).last() / xavier.run("post", 6).last()
    pre = xavier.run("pre", 12).last() / xavier.run("pre", 6).last()
    assert 0.85 < post < 1.15, post
    assert abs(pre - 1 / math.sqrt(2)) < 0.12, pre


def test_pre_ln_gradients_fall_with_the_layer_and_post_ln_stay_nearly_flat(xavier):
    pre_run, post_run = xavier.run("pre", 12), xavier.run("post", 12)
    pre, post = pre_run.grad_norm["ffn_out"].mean, post_run.grad_norm["ffn_out"].mean
    assert np.all(pre[1:] < 1.1 * pre[:-1])  # no step up beyond the seeds' noise
    assert pre_run.first_over_last.at()[1] > 2.0  # the interval's low end
    assert pre_run.slope.at()[2] < 0  # falls, within the interval
    assert post.max() / post.min() < 1.5
    assert 0.6 < post_run.first_over_last.at()[0] < 1.2
    assert abs(post_run.slope.at()[0]) < 0.05


def test_norm_inputs_follow_lemma2(xavier):
    for layers in (6, 12):
        pre, post = xavier.run("pre", layers), xavier.run("post", layers)
        # Post-LN: the input of ln_2 is a unit vector plus the FFN's d/2, in every block.
        ln_2 = post.input_ms["ln_2"].mean
        assert np.all(np.abs(ln_2 - 1.5) < 0.2), ln_2
        assert abs(ln_2.mean() - 1.5) < 0.1
        # Pre-LN: the residual stream after l blocks, 1 + l/2 <= E|x|^2/d <= 1 + 3l/2.
        stream = np.concatenate([pre.input_ms["ln_1"].mean, pre.input_ms["ln_f"].mean])
        blocks = np.arange(layers + 1)
        assert np.all(stream >= 0.95 * (1 + blocks / 2)), stream
        assert np.all(stream <= 1.05 * (1 + 1.5 * blocks)), stream
        assert np.all(np.diff(stream) > 0)
        np.testing.assert_allclose(
            pre.input_std["ln_1"].mean ** 2, pre.input_ms["ln_1"].mean, rtol=0.05
        )


def test_stream_laws_fitted_per_seed_tell_lemma2s_linear_growth_from_a_geometric_one():
    """Pre-LN's stream grows by 1/2 to 3/2 per block (Lemma 2: linear); a geometric series
    fitted the same way is told apart, and the rate and slope are the fits' own."""
    depth = np.arange(13.0)
    rng = np.random.default_rng(0)
    linear = 1 + 0.9 * depth + rng.normal(0, 0.05, (4, 13))
    geometric = np.exp(0.25 * depth + rng.normal(0, 0.01, (4, 13)))
    assert stream_growth(linear).better() == "linear"
    fit = stream_growth(geometric)
    assert fit.better() == "geometric"
    assert fit.rate.at()[0] == pytest.approx(0.25, abs=0.01)
    np.testing.assert_allclose(
        stream_growth(linear).slope.values, np.polyfit(depth, linear.T, 1)[0]
    )


def test_the_stream_of_pre_ln_grows_and_post_ln_keeps_it_normalised(xavier):
    pre, post = xavier.run("pre", 12), xavier.run("post", 12)
    assert pre.stream_var is not None and post.stream_var is not None
    assert np.all(np.diff(pre.stream_var.mean) > 0)
    np.testing.assert_allclose(post.stream_var.mean[1:], 1.0, atol=1e-3)  # LN's output
    assert pre.stream_growth is not None and pre.stream_growth.slope.at()[1] > 0.5


# The control: --init gpt2 ------------------------------------------------------------------


def test_gpt2_init_removes_pre_ln_depth_effect(gpt2, xavier):
    pre = gpt2.run("pre", 12).last() / gpt2.run("pre", 6).last()
    assert 0.85 < pre < 1.15, pre
    xavier_pre = xavier.run("pre", 12).last() / xavier.run("pre", 6).last()
    assert xavier_pre < pre - 0.15


# Measurement against an independent computation --------------------------------------------


@pytest.mark.parametrize("placement", list(LAYOUTS))
def test_measure_matches_a_plain_backward_and_the_residual_stream(placement: str):
    config = PlacementConfig(layers=[2], d_model=32, heads=2, seq_len=16, batch=2, vocab_size=300)
    ids = torch.randint(300, (2, 17), generator=torch.Generator().manual_seed(1))
    model = build_model(config, placement, 2, torch.Generator().manual_seed(0))
    loss, measured = measure_gradients(model, ids)

    model.zero_grad()
    model.loss(ids).backward()  # no hooks this time
    for i, block in enumerate(model.blocks):
        expected = block.mlp.fc_out.weight.grad.norm().item()
        assert measured["grad_norm"]["ffn_out"][i] == pytest.approx(expected, rel=1e-5)
    x = model.tok_emb(ids[:, :-1]) + model.pos_emb(torch.arange(16))
    with torch.no_grad():
        after = [x, model.blocks[0](x)]
        after.append(model.blocks[1](after[1]))
    variances = [h.double().var(dim=-1, correction=0).mean().item() for h in after]
    np.testing.assert_allclose(measured["stream"]["var"], variances, rtol=1e-5)
    if LAYOUTS[placement].final:  # E|x|^2/d at ln_f: the residual stream after both blocks
        expected = after[2].square().mean().item()
        assert measured["input_ms"]["ln_f"][0] == pytest.approx(expected, rel=1e-4)
    else:
        assert "ln_f" not in measured["input_ms"]
    assert list(measured["input_ms"]) == LAYOUTS[placement].norm_keys()
    assert loss == pytest.approx(model.loss(ids).item(), rel=1e-6)


def test_text_tokens_are_bytes_and_too_short_text_is_refused():
    result = run_placement(replace(TINY, layers=[2], seeds=1), text="héllo " * 20)
    assert (result.config.tokens, result.config.batch, result.config.seq_len) == ("bytes", 2, 16)
    assert result.notes == ["the text has 140 bytes: used the first 34 (2 sequences of 17 tokens)"]
    with pytest.raises(LninspectError, match="2 bytes"):
        run_placement(TINY, text="a")


# JSON, tables, figures ---------------------------------------------------------------------


def test_json_round_trip_keeps_the_contract():
    threads = torch.get_num_threads()
    result = run_placement(TINY)
    assert torch.get_num_threads() == threads  # one thread while running, restored after
    doc = json.loads(dump_json(result.to_json()))
    assert doc["schema"] == PLACEMENT_SCHEMA == "lninspect.placement/5"
    assert [(r["layout"], r["layers"]) for r in doc["runs"]] == [
        (name, n) for n in (2, 3) for name in LAYOUTS
    ]
    for run in doc["runs"]:
        assert {"layout", "norm", "layers", "grad_norm", "input_std", "slope"} <= set(run)
        assert set(run["grad_norm"]) == set(GRAD_KEYS)
        for value in run["grad_norm"].values():
            assert set(value) == {"values", "mean", "low", "high"}
            assert np.shape(value["values"]) == (2, run["layers"])  # (seeds, layers)
            assert len(value["mean"]) == len(value["low"]) == run["layers"]
        assert len(run["input_std"]["ln_1"]["mean"]) == run["layers"]
    assert [row["layers"] for row in doc["sweep"]] == [2, 3]
    assert set(doc["growth_exponent"]) == set(LAYOUTS) - {"pre"}
    assert set(doc["growth_exponent"]["post"]) == {"values", "mean", "low", "high"}
    assert np.shape(doc["runs"][0]["stream_var"]["values"]) == (2, 3)  # (seeds, L + 1)
    assert "training" not in doc
    back = PlacementResult.from_json(doc)
    assert back.config == result.config
    for a, b in zip(back.runs, result.runs, strict=True):
        for key in GRAD_KEYS:
            np.testing.assert_allclose(a.grad_norm[key].values, b.grad_norm[key].values)
            np.testing.assert_allclose(a.grad_norm[key].low, b.grad_norm[key].low)
        for key in a.input_ms:
            np.testing.assert_allclose(a.input_ms[key].mean, b.input_ms[key].mean)
        assert a.loss.at() == pytest.approx(b.loss.at())
    with pytest.raises(ValueError, match="schema"):
        PlacementResult.from_json({**doc, "schema": "lninspect.stats/1"})


def test_tables_fit_80_columns_and_figures_are_labelled():
    result = run_placement(TINY)
    console = Console(width=80, record=True)
    console.print(placement_report(result))
    text = console.export_text()
    assert "W^(2,l)" in text and "Lemma 2" in text and "sqrt(L/2)" in text
    for layout in LAYOUTS.values():
        assert layout.description in text.replace("\n", " ") or layout.label in text
    assert max(len(line) for line in text.splitlines()) <= 80
    first = result.run("pre", 3).grad_norm["ffn_out"]
    half = (first.high[0] - first.low[0]) / 2
    assert f" {fmt(first.mean[0])} " in text and f" ±{half:.2g} " in text  # stacked, not cut
    assert "attn_out" in text
    assert "95% t interval" in text
    for figure in (layers_figure(result), sweep_figure(result)):
        assert "init xavier" in figure.get_suptitle()
        for ax in figure.axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        (legend,) = figure.legends  # the layouts', under the panels: off the data
        labels = [t.get_text() for t in legend.get_texts()]
        assert all(any(x.label in label for label in labels) for x in LAYOUTS.values())
        figure.canvas.draw()
        box = legend.get_window_extent()
        assert all(box.y1 <= ax.get_window_extent().y0 for ax in figure.axes)
        figure.clear()


# The command line --------------------------------------------------------------------------

runner = CliRunner()
SMALL = ["--layers", "3,2", "--d-model", "32", "--heads", "2", "--seeds", "1"]


def invoke(*args: str):
    return runner.invoke(app, ["placement", *args], env={"COLUMNS": "200"})


def test_cli_writes_table_json_and_pngs(tmp_path: Path):
    out, path = tmp_path / "report", tmp_path / "placement.json"
    result = invoke(*SMALL, "--norm", "rmsnorm", "--plot", "--out", str(out), "--json", str(path))
    assert result.exit_code == 0, result.output
    assert "Gradient of W^(2,l), the FFN output, L=3" in result.stdout
    assert "post/pre" in result.stdout and "deepnorm/pre" in result.stdout
    doc = json.loads(path.read_text())
    assert doc["schema"] == PLACEMENT_SCHEMA and doc["config"]["layers"] == [2, 3]
    assert {r["norm"] for r in doc["runs"]} == {"rmsnorm"}
    for name in ("placement-layers.png", "placement-sweep.png"):
        with Image.open(out / name) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.shape[0] > 300 and pixels.std() > 10  # drawn, not blank

    again = invoke(*SMALL, "--plot", "--out", str(out))
    assert again.exit_code == 2 and "already exists" in again.output
    forced = invoke(*SMALL, "--plot", "--out", str(out), "--force", "--quiet")
    assert forced.exit_code == 0 and forced.stdout == ""


def test_cli_picks_layouts_and_a_baseline():
    result = invoke(*SMALL, "--placements", "peri,post", "--baseline", "post", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["config"]["layouts"] == ["peri", "post"] and doc["config"]["baseline"] == "post"
    assert [r["layout"] for r in doc["runs"]] == ["peri", "post"] * 2
    assert list(doc["sweep"][0]["ratio"]) == ["peri"] and list(doc["growth_exponent"]) == ["peri"]


def test_a_schema_2_document_reads_as_pre_and_post():
    old = json.loads((Path(__file__).parent / "golden" / "previous" / "placement.json").read_text())
    assert old["schema"] == "lninspect.placement/2"
    result = PlacementResult.from_json(old)
    assert result.config.layouts == ["pre", "post"] and result.config.baseline == "pre"
    assert [run.layout for run in result.runs] == ["pre", "post", "pre", "post"]
    row = old["sweep"][1]
    assert result.sweep[1].ratio["post"].at()[0] == row["ratio"]["mean"]
    assert result.sweep[1].last["pre"].at()[0] == row["pre"]["mean"]
    assert result.growth_exponent["post"].at()[0] == old["growth_exponent"]["mean"]
    again = result.to_json()
    assert again["schema"] == PLACEMENT_SCHEMA
    assert PlacementResult.from_json(again).to_json() == again


def test_cli_json_to_stdout_is_the_only_output():
    result = invoke(*SMALL, "--init", "gpt2", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["config"]["init"] == "gpt2"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "0,6"], "at least 1"),
        (["--layers", "six"], "comma-separated"),
        (["--d-model", "30", "--heads", "4"], "not divisible"),
        (["--seeds", "0"], "--seeds"),
        (["--init", "kaiming"], "--init"),
        (["--placements", "pre,sandwich"], "sandwich: the layouts are pre, post"),
        (["--placements", "peri,post"], "--baseline"),
        (["--baseline", "middle"], "not one of"),
        (["--train", "--layers", "2,3"], "one depth"),
        (["--train", "--text", "abc"], "--file"),
        (["--file", "x.txt"], "--train"),
        (["--device", "cuda"], "--train"),
        (["--train", "--lr", "1e-3,-1"], "positive"),
        (["--train", "--lr", "fast"], "comma-separated"),
    ],
)
def test_cli_refuses_bad_options_before_any_work(args: list[str], message: str):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
