"""Tables fit 80 columns (the width of a pipe or a file) and 120, without cut numbers or
trailing spaces; --wide adds the columns that do not fit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lninspect.cli import app

runner = CliRunner()
TEXT = "The quick brown fox jumps over the lazy dog."
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[+-]\d+)?")


def shown(width: int, *args: str) -> list[str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(width), "HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(2):
        (folder / f"{i}.txt").write_text(TEXT * 3)
    return folder


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", ["stats", "grads", "norms", "corpus"])
def test_tables_fit_the_width_whole(tiny_model_dir: Path, corpus: Path, command: str, width: int):
    model = str(tiny_model_dir)
    args = {
        "stats": ["stats", model, "--text", TEXT],
        "grads": ["grads", model, "--text", TEXT],
        "norms": ["norms", model],
        "corpus": ["stats", model, "--file", str(corpus / "*.txt"), "--seq-len", "16"],
    }[command]
    lines = shown(width, *args)
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert all(line == line.rstrip() for line in lines)
    rows = [line for line in lines if line.startswith(("0.ln_1", "final"))]
    assert rows, lines  # module names whole, on one line each
    assert not any("…" in line.split("  ")[-1] for line in rows)  # no number cut short
    assert all(len(line.split()) >= 4 for line in rows)  # a row, not a column of letters


def test_wide_adds_the_weights(tiny_model_dir: Path):
    narrow = shown(80, "stats", str(tiny_model_dir), "--text", TEXT)
    wide = shown(80, "stats", str(tiny_model_dir), "--text", TEXT, "--wide")
    header = next(line for line in wide if line.startswith("module"))
    assert "weight" in header and "w<0" in header
    assert not any("weight" in line.split() for line in narrow if line.startswith("module"))
    assert max(map(len, wide)) > 80  # its natural width, even in a pipe
    grads = shown(120, "grads", str(tiny_model_dir), "--text", TEXT, "--wide")
    assert any("attn_out" in line for line in grads) and any("med / max" in line for line in grads)
