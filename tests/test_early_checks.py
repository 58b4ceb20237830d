"""Work not done before a check that needs none of it: `norms` loads no tokenizer, and
--layers is checked against the config before any weight is built or read."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.errors import LninspectError
from lninspect.options import RunOptions


def test_norms_needs_no_tokenizer(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    import lninspect.model.loading as loading
    from lninspect.jobs import describe_norms

    def refuse(*args, **kwargs):
        raise AssertionError("norms loaded a tokenizer")

    monkeypatch.setattr(loading, "load_tokenizer", refuse)
    result = describe_norms(RunOptions(model=str(tiny_model_dir), device="cpu"))
    assert len(result.norms) == 5 and not any("tokenizer" in n for n in result.notes)


def test_layers_checked_before_the_weights(monkeypatch: pytest.MonkeyPatch):
    import lninspect.model.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("weights built before --layers was checked")

    monkeypatch.setattr(loading, "_auto_model", refuse)
    with pytest.raises(LninspectError, match=r"layers=60 is out of range.*48 layers"):
        loading.load_model("random:gpt2-xl", device="cpu", layers=(0, 60))
    result = CliRunner().invoke(
        app, ["stats", "random:gpt2-xl", "--layers", "60", "--text", "hi", "--device", "cpu"]
    )
    assert result.exit_code == 2 and "48 layers" in result.output
    assert result.output.count("\n") == 1
