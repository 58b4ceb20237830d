"""`lninspect grads`: gradient norms through the CLI against autograd on the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.render.catalog import GRADS, names_of
from lninspect.results import GradsResult
from lninspect.results.one_text import GRADS_SCHEMA

runner = CliRunner()
TEXT = "Layer normalization keeps every token at a steady scale."


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def reference(model_dir: Path, token_ids: list[list[int]]):
    """An independent run: the HF loss with labels, autograd gradients, retained outputs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    outputs = {}

    def keep(name):
        def hook(module, args, output):
            output.retain_grad()
            outputs[name] = output

        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.register_forward_hook(keep(name))
    ids = torch.tensor(token_ids)
    loss = model(ids, labels=ids).loss
    loss.backward()
    return model, loss.item(), outputs


@pytest.fixture(scope="module")
def grads_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("grads")
    path = out / "grads.json"
    result = invoke(
        "grads",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--json",
        str(path),
        "--plot",
        "--out",
        str(out / "report"),
    )
    assert result.exit_code == 0, result.output
    return result, json.loads(path.read_text()), out / "report"


def test_grads_json_matches_autograd(grads_run, tiny_model_dir: Path):
    _, doc, _ = grads_run
    assert doc["schema"] == GRADS_SCHEMA
    model, loss, outputs = reference(tiny_model_dir, doc["input"]["token_ids"])
    assert doc["loss"] == pytest.approx(loss, rel=1e-6)
    n = doc["input"]["num_tokens"]
    for norm in doc["norms"]:
        grad = norm["grad"]
        assert set(grad) == {"output_norm", "input_norm", "residual_norm", "output_nonfinite"}
        assert np.shape(grad["output_norm"]) == (1, n)
        want = outputs[norm["name"]].grad.norm(dim=-1).numpy()
        np.testing.assert_allclose(grad["output_norm"], want, rtol=1e-5, atol=1e-12)
    params = {p["name"]: p for p in doc["params"]}
    assert set(params) == {name for name, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        assert params[name]["numel"] == param.numel()
        assert params[name]["grad_norm"] == pytest.approx(param.grad.norm().item(), rel=1e-5)


def test_parameter_groups_of_gpt2(grads_run):
    _, doc, _ = grads_run
    group = {p["name"]: (p["layer"], p["group"]) for p in doc["params"]}
    assert group["transformer.wte.weight"] == (None, "embed")
    assert group["transformer.wpe.weight"] == (None, "embed")
    assert group["transformer.h.1.attn.c_attn.weight"] == (1, "attn_in")
    assert group["transformer.h.1.attn.c_proj.bias"] == (1, "attn_out")
    assert group["transformer.h.0.mlp.c_fc.weight"] == (0, "mlp_in")
    assert group["transformer.h.0.mlp.c_proj.weight"] == (0, "mlp_out")
    assert group["transformer.h.0.ln_2.weight"] == (0, "norm_weight")
    assert group["transformer.ln_f.bias"] == (None, "norm_bias")


def test_grads_tables_and_round_trip(grads_run):
    result, doc, _ = grads_run
    assert "|dL/dx|" in result.stdout and "attention" in result.stdout
    assert GradsResult.from_json(doc).to_json() == doc


def test_grads_pngs_decode_and_are_not_blank(grads_run):
    _, _, folder = grads_run
    assert sorted(p.name for p in folder.iterdir()) == sorted(names_of(GRADS))
    for name in names_of(GRADS):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
            assert image.width >= 800 and image.height >= 500
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 10  # not a blank canvas
        assert (pixels < 128).mean() > 0.01  # something dark was drawn


def test_existing_pngs_are_refused_without_force(grads_run, tiny_model_dir: Path):
    _, _, folder = grads_run
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    result = invoke("grads", str(tiny_model_dir), "--text", TEXT, "--plot", "--out", str(folder))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_target_loss_scores_one_token(tiny_model_dir: Path):
    result = invoke(
        "grads",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--loss",
        "target",
        "--target",
        "x",
        "--json",
        "-",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["loss_kind"].startswith("-log p(target")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    target = AutoTokenizer.from_pretrained(tiny_model_dir)("x")["input_ids"]
    logits = model(torch.tensor(doc["input"]["token_ids"])).logits[0, -1]
    assert doc["loss"] == pytest.approx(-torch.log_softmax(logits, -1)[target[0]].item(), rel=1e-5)
    missing = invoke("grads", str(tiny_model_dir), "--loss", "target")
    assert missing.exit_code == 2


def test_run_grads_returns_a_grads_result(tiny_model_dir: Path):
    from lninspect.jobs import run_grads
    from lninspect.options import RunOptions

    result = run_grads(RunOptions(model=str(tiny_model_dir), text=TEXT))
    assert type(result) is GradsResult and result.schema == GRADS_SCHEMA
    assert np.isfinite(result.loss) and result.params


def test_param_plot_draws_every_group_outside_the_blocks(grads_run):
    from dataclasses import replace

    from lninspect.render.grad_plots import plot_param_grads
    from lninspect.results import ParamGrad

    result = GradsResult.from_json(grads_run[1])
    outside = ["embed", "head", "norm_weight", "norm_bias", "other"]  # five: more than styles
    extra = [ParamGrad(f"p.{g}", None, g, 0.5 + i, 4) for i, g in enumerate(outside)]
    result = replace(result, params=[p for p in result.params if p.layer is not None] + extra)
    ax = plot_param_grads(result)
    labels = ax.get_legend_handles_labels()[1]
    assert sum("outside the blocks" in label for label in labels) == 5
