"""The example scripts run and print what they promise."""

from __future__ import annotations

import sys
from pathlib import Path

from tests import processes

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_gpt_block_example_finds_the_planted_spike():
    done = processes.run(
        [sys.executable, str(EXAMPLES / "gpt_block.py")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "ln_1" in done.stdout and "ln_2" in done.stdout
    assert "largest |x| at ln_1: 80.0 in dimension 7" in done.stdout
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines), done.stdout
