"""Start-up: wall time of `lninspect --help` and of `import lninspect`, in fresh processes.

    .venv/bin/python benchmarks/startup.py --repeats 10

Each run is a new interpreter, as a user's shell starts one; the median is printed with the
goals (--help under 0.3 s) and whether `import lninspect` / the CLI module pulled in torch
or transformers (they must not). Printed only; never asserted in tests on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

GOAL_HELP_SECONDS = 0.3
RUNS = {
    "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
    "import lninspect": [sys.executable, "-c", "import lninspect"],
    "lninspect --help": [sys.executable, "-m", "lninspect", "--help"],
    "lninspect stats --help": [sys.executable, "-m", "lninspect", "stats", "--help"],
}
HEAVY = ("torch", "transformers", "numpy", "matplotlib")
PROBE = (
    "import sys; import lninspect.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
)


def wall_time(command: list[str]) -> float:
    env = {**os.environ, "COLUMNS": "100"}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def heavy_imports() -> str:
    """Which heavy packages `import lninspect.cli` imports (none, ideally)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    for command in RUNS.values():  # warm the file cache
        wall_time(command)
    times = {name: [] for name in RUNS}
    for _ in range(args.repeats):
        for name, command in RUNS.items():
            times[name].append(wall_time(command))
    print(f"{'run':<40}{'median s':>10}{'min s':>8}")
    for name, values in times.items():
        print(f"{name:<40}{statistics.median(values):>10.3f}{min(values):>8.3f}")
    verdict = "ok" if statistics.median(times["lninspect --help"]) < GOAL_HELP_SECONDS else "MISSED"
    print(f"\nlninspect --help goal < {GOAL_HELP_SECONDS} s: {verdict}")
    print(f"heavy modules imported by `import lninspect.cli`: {heavy_imports()}")


if __name__ == "__main__":
    main()
