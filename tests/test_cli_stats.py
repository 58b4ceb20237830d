"""`lninspect stats` and `lninspect norms` end to end, through the CLI, offline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lninspect import statistics
from lninspect.cli import app
from lninspect.results import StatsResult
from lninspect.results.one_text import STATS_SCHEMA
from tests import processes

runner = CliRunner()
TEXT = "The quick brown fox jumps over the lazy dog."


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def test_stats_json_round_trips_and_matches_the_model(tiny_model_dir: Path, tmp_path: Path):
    path = tmp_path / "stats.json"
    result = invoke("stats", str(tiny_model_dir), "--text", TEXT, "--json", str(path))
    assert result.exit_code == 0, result.output
    assert "0.ln_1" in result.stdout and "attn" in result.stdout
    doc = json.loads(path.read_text())
    assert doc["schema"] == STATS_SCHEMA
    assert set(doc["model"]) >= {
        "name",
        "source",
        "class",
        "dtype",
        "device",
        "num_layers",
        "hidden_size",
    }
    assert doc["model"]["source"] == "local" and doc["model"]["class"] == "GPT2LMHeadModel"
    assert doc["input"]["num_sequences"] == 1
    n = doc["input"]["num_tokens"]
    assert len(doc["input"]["tokens"][0]) == n
    assert "".join(doc["input"]["tokens"][0]) == TEXT
    assert [d["role"] for d in doc["norms"]] == ["attn", "mlp", "attn", "mlp", "final"]
    first = doc["norms"][0]
    assert set(first) >= {
        "name",
        "type",
        "kind",
        "layer",
        "role",
        "eps",
        "input",
        "output",
        "weight",
    }
    assert set(first["input"]) == {s.field for s in statistics.FORWARD if s.side == "input"}
    assert np.shape(first["input"]["std"]) == (1, n)
    assert set(first["weight"]) == {"mean", "std", "min", "max", "negative"}

    # The JSON agrees with an independent recomputation on the same tokens.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    seen = {}
    model.transformer.h[1].ln_2.register_forward_hook(lambda m, a, o: seen.update(x=a[0]))
    with torch.no_grad():
        model(torch.tensor(doc["input"]["token_ids"]))
    _, mean, rstd = torch.native_layer_norm(seen["x"], (32,), None, None, 1e-5)
    np.testing.assert_allclose(doc["norms"][3]["input"]["std"], 1 / rstd.squeeze(-1), rtol=1e-5)

    loaded = StatsResult.from_json(doc)
    assert loaded.to_json() == doc


def test_json_to_stdout_is_the_only_stdout(tiny_model_dir: Path):
    result = invoke("stats", str(tiny_model_dir), "--text", TEXT, "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"] == STATS_SCHEMA


def test_norms_lists_modules_and_roles(tiny_model_dir: Path):
    result = invoke("norms", str(tiny_model_dir), "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "lninspect.norms/1"
    assert [(d["name"], d["layer"], d["role"]) for d in doc["norms"]] == [
        ("transformer.h.0.ln_1", 0, "attn"),
        ("transformer.h.0.ln_2", 0, "mlp"),
        ("transformer.h.1.ln_1", 1, "attn"),
        ("transformer.h.1.ln_2", 1, "mlp"),
        ("transformer.ln_f", None, "final"),
    ]
    table = invoke("norms", str(tiny_model_dir))
    assert "final" in table.stdout and "layernorm" in table.stdout


def test_random_gpt2_has_25_norms_of_1024_tokens(tmp_path: Path):
    path = tmp_path / "gpt2.json"
    text = "lorem ipsum dolor sit amet " * 60  # > 1024 bytes: the byte fallback gives 1 id each
    result = invoke("stats", "random:gpt2", "--text", text, "--json", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    doc = json.loads(path.read_text())
    assert doc["model"]["source"] == "random"
    assert doc["input"]["num_tokens"] == 1024  # cut at gpt2's context
    roles = [d["role"] for d in doc["norms"]]
    assert len(roles) == 25 and roles.count("attn") == 12 and roles.count("mlp") == 12
    assert roles[-1] == "final"
    assert all(np.shape(d["input"]["std"]) == (1, 1024) for d in doc["norms"])


def test_notes_say_truncation(tiny_model_dir: Path):
    result = invoke("stats", str(tiny_model_dir), "--text", TEXT, "--max-tokens", "3")
    assert result.exit_code == 0
    assert "kept the first 3 (--max-tokens)" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", ""], "the text is empty"),
        (["--file", "no-such-file.txt"], "does not exist"),
        (["--text", "a", "--file", "x.txt"], "either --text or --file"),
    ],
)
def test_bad_text_is_one_line_and_exit_2(tiny_model_dir: Path, args: list[str], message: str):
    result = invoke("stats", str(tiny_model_dir), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_json_is_not_overwritten_without_force(tiny_model_dir: Path, tmp_path: Path):
    path = tmp_path / "keep.json"
    path.write_text("mine")
    result = invoke("stats", str(tiny_model_dir), "--text", TEXT, "--json", str(path))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert path.read_text() == "mine"
    forced = invoke("stats", str(tiny_model_dir), "--text", TEXT, "--json", str(path), "--force")
    assert forced.exit_code == 0
    assert json.loads(path.read_text())["schema"] == STATS_SCHEMA
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_uncached_hub_id_offline_fails_without_retries(tmp_path: Path):
    result = runner.invoke(
        app,
        ["stats", "no-such-org/no-such-model", "--text", "hi"],
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "not in the Hugging Face cache" in result.stderr and "random:gpt2" in result.stderr
    assert "Retry" not in result.output  # decided from the cache alone (wall times: benchmarks/)


def test_invalid_options_are_refused_before_loading():
    for args in (["--device", "gpu7"], ["--dtype", "float8"], ["--max-tokens", "0"]):
        result = invoke("stats", "definitely-not-loaded", *args)
        assert result.exit_code == 2, args


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys; from lninspect.cli import main; sys.argv = ['lninspect', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'transformers', 'jinja2', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy"  # the renderer's imports too: help is instant
    )
    done = processes.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stderr
    assert "stats" in done.stdout and "norms" in done.stdout
    light = processes.run(
        [sys.executable, "-c", "import lninspect, sys; assert 'transformers' not in sys.modules"],
        capture_output=True,
    )
    assert light.returncode == 0


def test_python_dash_m_runs_the_cli():
    done = processes.run(
        [sys.executable, "-m", "lninspect", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("lninspect ")


@pytest.mark.parametrize(
    "args", [["stats", "--max-tokens", "0"], ["stats", "--dtype", "float8"], ["no-such-command"]]
)
def test_usage_errors_are_one_line_from_the_real_entry_point(args: list[str]):
    done = processes.run(
        [sys.executable, "-m", "lninspect", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0]
