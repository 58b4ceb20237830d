"""Golden JSON files of every schema, on small fixed inputs: the layout may move, the output not.

Each case runs one CLI command on the bundled `tiny` model (weights from its files, so no
random state is involved) or on the seeded placement experiment, and compares the JSON with
tests/golden/NAME.json: keys, strings and integers exactly, floats to 1e-5 relative.
`LNINSPECT_UPDATE_GOLDEN=1 pytest tests/test_golden.py` rewrites the files; do that only for
a deliberate change of output, and say so in docs/statistics.md when a schema changes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lninspect.cli import app

GOLDEN = Path(__file__).parent / "golden"
TEXT = "Layer normalization keeps every token at a steady scale. The end."
CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "A language model predicts the next token from the ones before it. " * 2,
]
CASES = {
    "stats": ["stats", "tiny", "--text", TEXT, "--spikes"],
    "grads": ["grads", "tiny", "--text", TEXT],
    "norms": ["norms", "tiny"],
    "compare": ["compare", "tiny", "tiny", "--text", TEXT],
    "corpus": [
        "stats",
        "tiny",
        "--file",
        "{a}",
        "--file",
        "{b}",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--spikes",
    ],
    "placement": [
        "placement",
        "--layers",
        "2,3",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seeds",
        "2",
    ],
    "placement-train": [
        "placement",
        "--train",
        "--layers",
        "2",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seeds",
        "2",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--steps",
        "4",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--eval-every",
        "2",
        "--stats-every",
        "2",
    ],
}


def _close(got: Any, want: Any, where: str = "$") -> None:
    """Assert `got` equals `want`: same structure and keys, floats to 1e-5 relative."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys differ"
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length differs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} is not a number"
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-7), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_json_matches_the_golden_file(name: str, tmp_path: Path):
    files = {}
    for key, text in zip("ab", CORPUS, strict=True):
        files[key] = tmp_path / f"{key}.txt"
        files[key].write_text(text)
    args = [arg.format(**files) for arg in CASES[name]]
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app, [*args, "--json", str(out)], env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    if name == "corpus":  # temporary paths differ from run to run
        doc["corpus"]["files"] = [Path(f).name for f in doc["corpus"]["files"]]
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("LNINSPECT_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(doc, ensure_ascii=False) + "\n")
    _close(doc, json.loads(golden.read_text()))
