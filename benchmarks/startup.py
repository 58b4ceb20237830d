"""Start-up: wall time of `lninspect --help`, `import lninspect` and `lninspect norms tiny`,
in fresh processes.

    .venv/bin/python benchmarks/startup.py --repeats 10

Each run is a new interpreter, as a user's shell starts one; the runs are interleaved and
their medians printed with the goals: --help under 0.3 s, and `lninspect norms tiny` within
1 s of importing torch and the bundled model's modeling module (transformers' GPT-2), which
any run of that model needs. Also whether `import lninspect` / the CLI module pulled in torch
or transformers (they must not), and the offline failure of an uncached hub id. Printed
only; never asserted in tests on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

GOAL_HELP_SECONDS = 0.3
GOAL_NORMS_OVER_IMPORTS = 1.0
IMPORTS = "import torch + modeling_gpt2"
NORMS = "lninspect norms tiny"
RUNS = {
    "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
    "import lninspect": [sys.executable, "-c", "import lninspect"],
    "lninspect --help": [sys.executable, "-m", "lninspect", "--help"],
    "lninspect stats --help": [sys.executable, "-m", "lninspect", "stats", "--help"],
    "import torch": [sys.executable, "-c", "import torch"],
    IMPORTS: [sys.executable, "-c", "import torch, transformers.models.gpt2.modeling_gpt2"],
    NORMS: [sys.executable, "-m", "lninspect", "norms", "tiny"],
    "stats no-such/model (offline)": [
        sys.executable,
        "-m",
        "lninspect",
        "stats",
        "no-such/model",
        "--text",
        "hi",
    ],
}
FAILING = {"stats no-such/model (offline)"}  # exit 2 is the point
HEAVY = ("torch", "transformers", "numpy", "matplotlib")
PROBE = (
    "import sys; import lninspect.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
)


def wall_time(command: list[str], check: bool = True) -> float:
    env = {**os.environ, "COLUMNS": "100", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=check, capture_output=True, env=env)
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
    for name, command in RUNS.items():  # warm the file cache
        wall_time(command, check=name not in FAILING)
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    for _ in range(args.repeats):
        for name, command in RUNS.items():
            times[name].append(wall_time(command, check=name not in FAILING))
    print(f"{'run':<40}{'median s':>10}{'min s':>8}")
    for name, values in times.items():
        print(f"{name:<40}{statistics.median(values):>10.3f}{min(values):>8.3f}")
    verdict = "ok" if statistics.median(times["lninspect --help"]) < GOAL_HELP_SECONDS else "MISSED"
    print(f"\nlninspect --help goal < {GOAL_HELP_SECONDS} s: {verdict}")
    over = [n - i for n, i in zip(times[NORMS], times[IMPORTS], strict=True)]
    verdict = "ok" if statistics.median(over) < GOAL_NORMS_OVER_IMPORTS else "MISSED"
    print(
        f"{NORMS} minus ({IMPORTS}), paired: median {statistics.median(over):.3f} s, "
        f"goal < {GOAL_NORMS_OVER_IMPORTS} s: {verdict}"
    )
    print(f"heavy modules imported by `import lninspect.cli`: {heavy_imports()}")


if __name__ == "__main__":
    main()
