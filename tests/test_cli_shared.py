"""The CLI's shared options: declared once (lninspect.cli.shared), taken by every command
that loads a model, and commands a screen long."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.cli.shared import MODEL, PRINTED, SPIKES, TEXT

CLI = Path(__file__).parents[1] / "lninspect" / "cli"
MAX_LINES = 60
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def parameters(command: str) -> set[str]:
    (info,) = [c for c in app.registered_commands if (c.name or c.callback.__name__) == command]
    return set(inspect.signature(info.callback).parameters)


def test_no_function_in_the_cli_is_longer_than_a_screen():
    long = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(CLI.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert long == []


@pytest.mark.parametrize("command", ["stats", "grads", "report", "compare", "norms"])
def test_every_command_that_loads_a_model_takes_the_shared_options(command: str):
    given = parameters(command)
    groups = (MODEL,) if command == "norms" else (MODEL, TEXT)
    wanted = {d.name for group in groups for d in group} | {"json", "quiet", "wide"}
    if command != "report":  # report's --force has help of its own (a non-empty --out)
        wanted |= {d.name for d in PRINTED}
    if command in ("stats", "report", "compare"):
        wanted |= {d.name for d in SPIKES}
    assert wanted <= given


def test_unknown_norm_class_is_refused_with_close_names(tiny_model_dir: Path):
    result = invoke("norms", str(tiny_model_dir), "--norm-class", "LayerNrm")
    assert result.exit_code == 2
    assert (
        "--norm-class LayerNrm: no module of the model has that class; did you mean LayerNorm?"
        in result.output
    )


def test_a_known_norm_class_changes_nothing(tiny_model_dir: Path):
    known = invoke("norms", str(tiny_model_dir), "--norm-class", "LayerNorm", "--json", "-")
    assert known.exit_code == 0, known.output
    assert len(json.loads(known.stdout)["norms"]) == 5
