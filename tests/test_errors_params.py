"""The library's messages name its parameters (`max_tokens=0`); the CLI's name its flags
(`--max-tokens 0`), through the one table of lninspect/cli/flags.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2

from lninspect import capture, load_model
from lninspect.cli.flags import FLAGS, as_flags
from lninspect.errors import LninspectError
from lninspect.jobs import run_stats
from lninspect.options import RunOptions

PACKAGE = Path(__file__).resolve().parents[1] / "lninspect"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
DOCS_WRITERS = {"markdown_table"}  # build docs pages about the CLI: they name its flags


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _error_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "LninspectError"
    ]


def _library_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string literals a module of the library may show a user: every one
    but docstrings and docs writers; in render/ (table captions for the CLI) its errors."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    scopes: list[ast.AST] = list(_error_calls(tree)) if path.parent.name == "render" else [tree]
    skipped = _docstrings(tree) | {
        id(node)
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef) and func.name in DOCS_WRITERS
        for node in ast.walk(func)
    }
    return [
        (node.lineno, node.value)
        for scope in scopes
        for node in ast.walk(scope)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skipped
    ]


def test_no_message_of_the_library_names_a_flag():
    modules = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(modules) > 50
    found = {
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in modules
        for line, text in _library_texts(path)
        if FLAG.search(text)
    }
    assert not found, "\n".join(sorted(found))


def test_the_scan_sees_a_flag(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('def f():\n    raise LninspectError(f"--max-tokens {0} is too small")\n')
    assert any(FLAG.search(text) for _, text in _library_texts(planted))


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        ("max_tokens=0 is not positive", "--max-tokens 0 is not positive"),
        ("use force=True to overwrite it", "use --force to overwrite it"),
        ("max_memory= needs device_map=", "--max-memory needs --device-map"),
        ("device_map='x': use one of", "--device-map 'x': use one of"),
        ("norm_classes=A: no module", "--norm-class A: no module"),
        ("pass include=(A, B)", "pass --norm-class A --norm-class B"),
        ("pass include=(A,)", "pass --norm-class A"),
        ("(stride=; the last ends)", "(--stride; the last ends)"),
        ("text= or a corpus (files=...)", "--text or a corpus (--file ...)"),
        (
            "'/tmp/seed=3', x_seed=3 and watch(text=...) stay",
            "'/tmp/seed=3', x_seed=3 and watch(text=...) stay",
        ),
    ],
)
def test_the_cli_names_the_flags(library, cli):
    assert as_flags(library) == cli


def test_every_flag_is_spelt_as_typer_spells_it():
    for name, flag in FLAGS.items():
        assert re.fullmatch(r"--[a-z]+(-[a-z]+)*", flag), (name, flag)


def test_load_model_names_its_parameters():
    with pytest.raises(LninspectError, match=r"^seed=-1 is outside"):
        load_model("tiny", seed=-1)
    with pytest.raises(LninspectError, match=r"^device_map='nowhere': use one of"):
        load_model("tiny", device_map="nowhere")
    with pytest.raises(LninspectError, match=r"^max_memory= needs device_map="):
        load_model("tiny", max_memory="cpu=1GiB")


def test_capture_and_the_jobs_name_their_parameters(tmp_path):
    model = tiny_gpt2()
    with pytest.raises(ValueError, match=r"reductions must be one of"):
        with capture(model, reductions="sometimes"):
            model(torch.tensor([[1, 2, 3]]))
    text = tmp_path / "t.txt"
    text.write_text("some words")
    with pytest.raises(LninspectError, match=r"^give either text= or file=, not both"):
        run_stats(RunOptions(model="tiny", text="words", file=text))


def test_the_configs_check_themselves_in_the_callers_words():
    from lninspect.options import CorpusOptions
    from lninspect.placement.config import PlacementConfig, TrainConfig

    with pytest.raises(LninspectError, match=r"^max_tokens=0 is below 1$"):
        RunOptions(max_tokens=0)
    with pytest.raises(LninspectError, match=r"^batch_size=0 is below 1$"):
        CorpusOptions(batch_size=0)
    with pytest.raises(LninspectError, match=r"^d_model=30 is not divisible by heads=4$"):
        PlacementConfig(d_model=30, heads=4)
    with pytest.raises(LninspectError, match=r"^baseline=pre is not among layouts=peri,post$"):
        PlacementConfig(layouts=["peri", "post"])
    with pytest.raises(LninspectError, match=r"^lrs=\[-1.0\]: every learning rate"):
        TrainConfig(lrs=[-1.0])
    assert as_flags("d_model=30 is not divisible by heads=4") == (
        "--d-model 30 is not divisible by --heads 4"
    )
