"""Where a captured forward pass spends its time: torch.profiler over one pass, one thread.

    .venv/bin/python benchmarks/profile_spikes.py                # stats --spikes
    .venv/bin/python benchmarks/profile_spikes.py --run stats    # stats alone
    .venv/bin/python benchmarks/profile_spikes.py --run bare     # the bare forward

random:gpt2 by default, one sequence of 1024 tokens, float32 on the CPU, the eager
reductions. One warm-up run, then one profiled run; prints the ops by self CPU time (calls,
self time, total time). The bare forward's own ops (addmm, the attention) appear in every
run: the difference between two tables is what capture adds. Then `--pairs` pairs of the
run and a bare forward, alternating, unprofiled: the ratio of the process's CPU time
(time.process_time, median), which a shared machine's other work leaves out where wall time
counts it (it still shares the caches and the memory bandwidth).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from lninspect import SpikeOptions, capture, find_norms
from lninspect.model.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--run", default="spikes", choices=("spikes", "stats", "bare"))
    parser.add_argument("--rows", type=int, default=25, help="ops listed")
    parser.add_argument("--pairs", type=int, default=3, help="profiled (run, bare) pairs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    model = loaded.model
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, args.tokens), generator=generator)
    norms = find_norms(model)
    spikes = SpikeOptions() if args.run == "spikes" else None

    def bare() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def run() -> None:
        if args.run == "bare":
            return bare()
        with capture(model, norms, spikes=spikes, reductions="eager") as cap:
            bare()
        cap.result()

    run()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(f"{args.model}, 1 x {args.tokens} tokens, run {args.run!r}, 1 thread")
    print(table)
    ratios = [cpu_seconds(run) / cpu_seconds(bare) for _ in range(args.pairs)]
    print(f"CPU time, run / bare forward: median {statistics.median(ratios):.3f}", end="")
    print(f" of {', '.join(f'{r:.3f}' for r in ratios)}")


def cpu_seconds(fn: Callable[[], None]) -> float:
    """The CPU time this process spends in fn (one thread: its time on a core)."""
    start = time.process_time()
    fn()
    return time.process_time() - start


if __name__ == "__main__":
    main()
