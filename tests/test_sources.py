"""Where models come from, offline and without network: quick answers, clear errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lninspect.errors import LninspectError
from lninspect.model.sources import http_answers, hub_answers, locate
from tests import processes

ENV = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}


def lninspect(*args: str, offline: bool, hf_home: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**ENV, "HF_HOME": str(hf_home), "COLUMNS": "200", **env}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return processes.run(
        [sys.executable, "-m", "lninspect", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def test_default_model_offline_with_an_empty_cache_is_the_bundled_one(tmp_path: Path):
    done = lninspect("stats", "--text", "hi", offline=True, hf_home=tmp_path)
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("model: tiny (") and "HF_HUB_OFFLINE" in first
    assert "tiny (bundled)" in done.stdout


def test_typed_model_never_falls_back(tmp_path: Path):
    done = lninspect("stats", "gpt2", "--text", "hi", offline=True, hf_home=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpt2" in lines[0] and "`tiny`" in lines[0]


def test_a_hub_that_does_not_answer_is_said_for_both(tmp_path: Path):
    closed = "http://127.0.0.1:9"  # nothing listens: refused at once, whatever the network
    default = lninspect(
        "stats", "--text", "hi", offline=False, hf_home=tmp_path, HF_ENDPOINT=closed
    )
    assert default.returncode == 0, default.stderr
    assert f"the Hugging Face Hub ({closed}) did not answer within 3 s" in default.stderr
    typed = lninspect("stats", "gpt2", "--text", "hi", offline=False, hf_home=tmp_path,
                      HF_ENDPOINT=closed)  # fmt: skip
    assert typed.returncode == 2 and "did not answer" in typed.stderr
    assert "Retry" not in typed.stderr + default.stderr


def test_the_probe_waits_for_its_timeout_and_no_longer():
    """Bounded by construction: a transport that never returns is abandoned at the timeout."""
    hub_answers.cache_clear()
    asked: list[tuple[str, float]] = []
    release = threading.Event()

    def hangs(url: str, timeout: float) -> bool:
        asked.append((url, timeout))
        release.wait()  # a name lookup that ignores every socket timeout
        return True

    joined: list[float | None] = []
    real_join = threading.Thread.join

    def join(thread: threading.Thread, timeout: float | None = None) -> None:
        joined.append(timeout)
        real_join(thread, 0.01)  # the fake clock: the timeout has passed

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setenv("HF_ENDPOINT", "https://hub.example")
        patch.setattr(threading.Thread, "join", join)
        assert hub_answers("org/model", None, 3.0, hangs) is False
    release.set()
    hub_answers.cache_clear()
    assert joined == [3.0]  # waited once, for the probe's own timeout
    assert asked == [("https://hub.example/api/models/org/model", 3.0)]


def test_any_http_answer_means_the_hub_is_there(monkeypatch: pytest.MonkeyPatch):
    def answer(error: Exception | None):
        def urlopen(request, timeout):
            if error is not None:
                raise error
            return io.BytesIO(b"{}")

        return urlopen

    not_found = urllib.error.HTTPError("u", 404, "Not Found", {}, None)  # type: ignore[arg-type]
    cases = [(None, True), (not_found, True), (urllib.error.URLError("no route"), False),
             (TimeoutError("timed out"), False)]  # fmt: skip
    for error, expected in cases:
        monkeypatch.setattr(urllib.request, "urlopen", answer(error))
        assert http_answers("https://hub.example/api/models/gpt2", 3.0) is expected


def test_locate_kinds(tiny_model_dir: Path, tmp_path: Path):
    assert locate("random:gpt2").kind == "random"
    assert locate("tiny").kind == "bundled"
    assert locate(str(tiny_model_dir)).kind == "local"
    with pytest.raises(LninspectError, match="holds no model"):
        locate(str(tmp_path))
    with pytest.raises(LninspectError, match="does not exist"):
        locate("./no/such/dir")
