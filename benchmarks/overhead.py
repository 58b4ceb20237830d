"""Capture overhead: lninspect's stats and grads runs against the bare model, same process.

    .venv/bin/python benchmarks/overhead.py                 # gpt2-sized, 1024 tokens, CPU
    .venv/bin/python benchmarks/overhead.py --device cuda --dtype bfloat16 --batch-size 16
    .venv/bin/python benchmarks/overhead.py --spikes --threads 1   # adds `stats --spikes`
    .venv/bin/python benchmarks/overhead.py --map --threads 1      # adds `stats --map`

Time: median over interleaved repeats of (a) a bare forward (inference mode) against the
same forward inside `capture(model)`, and (b) a bare forward + backward of the LM loss
against the same inside `capture(model, grads=True)`; with `--spikes`, (c) the forward
inside `capture(model, spikes=SpikeOptions())`, against the bare forward (opt-in, no goal);
with `--map`, (d) the forward inside `capture(model, maps=MapOptions(sample=True))` and the
gathering and fits of its sample, against `stats` (goal: within 1.10x of it).
Two more rows run the same passes with forward hooks that do nothing on every norm (and
tensor hooks that do nothing on their outputs, backward): at batch 1 a GPU run is
launch-bound, and the goal there is capture within 1.10x of those.
Peak memory: the highest total of bytes allocated during one run above what was allocated
before it (model weights excluded), from torch.cuda's peak counter on CUDA, and on the CPU
from the PyTorch profiler's allocation events. Goals: stats time <= 1.05, grads time
<= 1.10, memory <= 1.05. Printed as ratios; never asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from lninspect import SpikeOptions, capture, find_norms
from lninspect.model.loading import load_model
from lninspect.options import MapOptions

GOALS = {
    "stats time": 1.05,
    "stats memory": 1.05,
    "grads time": 1.10,
    "grads memory": 1.05,
    "stats --map time": 1.10,  # against stats
}
NOOP_GOAL = 1.10  # capture against hooks that do nothing (the launch-bound goal at batch 1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def peak_bytes(fn: Callable[[], None], device: torch.device, repeats: int = 3) -> float:
    """Median over `repeats` runs of the peak bytes `fn` allocates above its starting level.

    `fn` runs once first, so that every measured run starts from the same state (e.g. the
    previous backward's gradients, which `zero_grad` frees, exist each time); on the CPU
    the first profiled run also sees allocations it cannot match, hence the median.
    """
    fn()
    return statistics.median(peak_once(fn, device) for _ in range(repeats))


def peak_once(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events())
    return float(np.cumsum([bytes_ for _, bytes_ in events]).max())


def make_runs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    reductions: str,
    spikes: bool = False,
    maps: bool = False,
) -> dict[str, Callable[[], None]]:
    """The runs to compare: bare, no-op hooks and captured; forward and forward + backward
    (and the forward with spike metrics).

    Norms are found once, as the CLI does; discovery's probe pass is not part of a run.
    """
    norms = find_norms(model)

    @contextmanager
    def noop_hooks() -> Iterator[None]:
        def on_output(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad: None)

        handles = [n.module.register_forward_hook(on_output) for n in norms]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()

    def noop_forward() -> None:
        with noop_hooks():
            forward()

    def noop_forward_backward() -> None:
        with noop_hooks():
            forward_backward()

    def stats() -> None:
        with capture(model, norms, reductions=reductions) as cap:
            forward()
        cap.result()

    def grads() -> None:
        with capture(model, norms, grads=True, reductions=reductions) as cap:
            forward_backward()
        cap.result()

    def stats_spikes() -> None:
        with capture(model, norms, spikes=SpikeOptions(), reductions=reductions) as cap:
            forward()
        cap.result()

    def stats_map() -> None:
        with capture(model, norms, reductions=reductions, maps=MapOptions(sample=True)) as cap:
            forward()
        cap.result()

    runs = {"bare forward": forward, "no-op hooks forward": noop_forward, "stats": stats}
    if spikes:
        runs["stats --spikes"] = stats_spikes
    if maps:
        runs["stats --map"] = stats_map
    backward = {"no-op hooks fwd+bwd": noop_forward_backward, "grads": grads}
    return runs | {"bare forward+backward": forward_backward} | backward


def measure(
    runs: dict[str, Callable[[], None]], device: torch.device, repeats: int
) -> dict[str, tuple[float, float]]:
    """(median seconds, peak bytes) per run; repeats interleave the runs to share drift."""
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    return {
        name: (statistics.median(times[name]), peak_bytes(fn, device)) for name, fn in runs.items()
    }


def report(results: dict[str, tuple[float, float]]) -> None:
    pairs = {"stats": "bare forward", "grads": "bare forward+backward"}
    if "stats --spikes" in results:
        pairs = {"stats": "bare forward", "stats --spikes": "bare forward", **pairs}
    if "stats --map" in results:
        pairs = {**pairs, "stats --map": "stats"}
    print(f"{'run':<24}{'median s':>10}{'peak MiB':>10}")
    for name, (seconds, peak) in results.items():
        print(f"{name:<24}{seconds:>10.4f}{peak / 2**20:>10.1f}")
    print()
    print(f"{'ratio':<24}{'measured':>10}{'goal':>8}")
    for run, bare in pairs.items():
        for what, index in (("time", 0), ("memory", 1)):
            ratio = results[run][index] / results[bare][index]
            goal = GOALS.get(f"{run} {what}")
            if goal is None:  # opt-in metrics: measured, no goal
                print(f"{run + ' ' + what:<24}{ratio:>10.3f}{'—':>8}")
                continue
            verdict = "ok" if ratio <= goal else "MISSED"
            print(f"{run + ' ' + what:<24}{ratio:>10.3f}{'<= ' + str(goal):>8}  {verdict}")
    noop = {"stats": "no-op hooks forward", "grads": "no-op hooks fwd+bwd"}
    for run, hooks in noop.items():
        ratio = results[run][0] / results[hooks][0]
        verdict = "ok" if ratio <= NOOP_GOAL else "MISSED"
        print(f"{run + ' / no-op hooks':<24}{ratio:>10.3f}{'<= ' + str(NOOP_GOAL):>8}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per pass")
    parser.add_argument("--reductions", default="auto", choices=("auto", "eager", "compiled"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--spikes", action="store_true", help="also time `stats --spikes`")
    parser.add_argument("--map", action="store_true", help="also time `stats --map`")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    device = loaded.device
    generator = torch.Generator().manual_seed(0)
    vocab = loaded.model.config.vocab_size
    shape = (args.batch_size, args.tokens)
    ids = torch.randint(0, vocab, shape, generator=generator).to(device)
    print(
        f"{args.model} · {loaded.info.cls} · {args.dtype} on {device} · batch "
        f"{args.batch_size} x {args.tokens} tokens · reductions {args.reductions} · "
        f"{torch.get_num_threads()} threads · torch {torch.__version__}"
    )
    runs = make_runs(loaded.model, ids, args.reductions, args.spikes, args.map)
    report(measure(runs, device, args.repeats))


if __name__ == "__main__":
    main()
