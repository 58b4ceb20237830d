"""Time and peak memory of `lninspect run` on a generated log (issue 34, 1).

    .venv/bin/python benchmarks/run_log.py --records 10000 --new-names    # one new norm a record
    .venv/bin/python benchmarks/run_log.py --records 20000 --norms 25     # a steady model

`--new-names`: each record holds one norm of a name no record before it had (the hostile
log of issue 34); otherwise every record holds the same `--norms` norms. The log is written
to a temporary folder, then `lninspect run` reads it in a child process (no figures);
printed: its exit code, last line, wall time and peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANTILE = {k: 1.0 for k in ("q05", "q25", "q50", "q75", "q95", "max")}


def norm(name: str, layer: int, value: float) -> dict[str, object]:
    block = {k: value for k in QUANTILE}
    return {
        "name": name,
        "layer": layer,
        "role": "attn_in",
        "absmax": value,
        "absmax_dim": 0,
        **{k: block for k in ("input_denominator", "output_std", "grad_scale")},
    }


def write_log(path: Path, records: int, norms: int, new_names: bool) -> None:
    with path.open("w") as out:
        for step in range(records):
            value = 1.0 + step % 7
            if new_names:
                listed = [norm(f"h.{step}.ln", step % 1000, value)]
            else:
                listed = [norm(f"h.{i}.ln", i, value) for i in range(norms)]
            doc = {"schema": "lninspect.watch/1", "step": step, "loss": value, "lr": 0.1}
            out.write(json.dumps({**doc, "norms": listed, "params": [], "tokens": 8}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--norms", type=int, default=25)
    parser.add_argument("--new-names", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.jsonl"
        write_log(log, args.records, args.norms, args.new_names)
        size = log.stat().st_size
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "lninspect", "run", str(log)], capture_output=True, text=True
        )
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    last = (done.stdout + done.stderr).strip().splitlines()[-1:]
    print(f"log {size / 1e6:.1f} MB, {args.records} records: exit {done.returncode}, ")
    print(f"  {wall:.1f} s, peak {peak:.0f} MiB; last line: {last[0] if last else ''}")


if __name__ == "__main__":
    main()
