"""Subprocesses in tests: a timeout only as a guard against a hang, and its expiry said as one.

On a loaded 2-core machine a run may take many times its usual time; that is no failure of
the feature, so the guard is generous and no test asserts on elapsed time.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

HANG_GUARD_S = 900


def _hung(args: Sequence[Any]) -> None:
    command = shlex.join(str(a) for a in args)
    pytest.fail(
        f"hang: `{command[:200]}` did not exit within {HANG_GUARD_S} s "
        "(a guard against a hang, not a time limit)",
        pytrace=False,
    )


def run(args: Sequence[Any], **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run(args, **kwargs) under the hang guard."""
    try:
        return subprocess.run(args, timeout=HANG_GUARD_S, **kwargs)
    except subprocess.TimeoutExpired:
        _hung(args)
        raise  # unreachable: pytest.fail raises


def communicate(process: subprocess.Popen, args: Sequence[Any]) -> tuple[Any, Any]:
    """process.communicate() under the hang guard (the process is killed on expiry)."""
    try:
        return process.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _hung(args)
        raise
