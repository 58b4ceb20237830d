"""Where models come from, offline and without network: quick answers, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lninspect.errors import LninspectError
from lninspect.model.sources import hub_answers, locate

ENV = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}


def lninspect(
    *args: str, offline: bool, hf_home: Path
) -> tuple[subprocess.CompletedProcess, float]:
    env = {**ENV, "HF_HOME": str(hf_home), "COLUMNS": "200"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lninspect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return done, time.monotonic() - started


def test_default_model_offline_with_an_empty_cache_is_the_bundled_one(tmp_path: Path):
    done, _ = lninspect("stats", "--text", "hi", offline=True, hf_home=tmp_path)
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("model: tiny (") and "HF_HUB_OFFLINE" in first
    assert "tiny (bundled)" in done.stdout


def test_typed_model_never_falls_back(tmp_path: Path):
    done, seconds = lninspect("stats", "gpt2", "--text", "hi", offline=True, hf_home=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpt2" in lines[0] and "`tiny`" in lines[0]
    assert seconds < 10


@pytest.mark.skipif(hub_answers("gpt2"), reason="the Hugging Face Hub is reachable here")
def test_without_network_both_answer_within_10_seconds(tmp_path: Path):
    default, seconds = lninspect("stats", "--text", "hi", offline=False, hf_home=tmp_path)
    assert default.returncode == 0, default.stderr
    assert seconds < 10 and "the hub cannot be reached" in default.stderr
    typed, seconds = lninspect("stats", "gpt2", "--text", "hi", offline=False, hf_home=tmp_path)
    assert typed.returncode == 2 and "cannot be reached" in typed.stderr
    assert seconds < 10


def test_locate_kinds(tiny_model_dir: Path, tmp_path: Path):
    assert locate("random:gpt2").kind == "random"
    assert locate("tiny").kind == "bundled"
    assert locate(str(tiny_model_dir)).kind == "local"
    with pytest.raises(LninspectError, match="holds no model"):
        locate(str(tmp_path))
    with pytest.raises(LninspectError, match="does not exist"):
        locate("./no/such/dir")
