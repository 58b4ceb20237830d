"""A .gguf MODEL: where it is looked for and the errors, without loading anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.errors import EXIT_USAGE, LninspectError
from lninspect.model.sources import locate


def test_a_gguf_file_or_a_folder_and_gguf_file(tmp_path: Path):
    (tmp_path / "m.Q4.gguf").write_bytes(b"GGUF")
    source = locate(str(tmp_path / "m.Q4.gguf"))
    assert (source.kind, source.path, source.gguf_file) == ("gguf", str(tmp_path), "m.Q4.gguf")
    assert locate(str(tmp_path), gguf_file="m.Q4.gguf") == source.__class__(
        str(tmp_path), "gguf", str(tmp_path), local_only=True, gguf_file="m.Q4.gguf"
    )
    with pytest.raises(LninspectError, match=r"holds m\.Q4\.gguf: pass --gguf-file NAME"):
        locate(str(tmp_path))
    with pytest.raises(LninspectError, match="does not exist"):
        locate(str(tmp_path / "other.gguf"))
    with pytest.raises(LninspectError, match="needs MODEL to be the folder"):
        locate(str(tmp_path / "m.Q4.gguf"), gguf_file="m.Q4.gguf")


def test_without_the_gguf_package_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    result = CliRunner().invoke(
        app, ["norms", str(tmp_path / "m.gguf"), "--device", "cpu"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == EXIT_USAGE
    assert "pip install 'lninspect[gguf]'" in result.output
    assert "Traceback" not in result.output
