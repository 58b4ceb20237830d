"""Host time of capturing, phase by phase: what a launch-bound run (a GPU at batch 1) waits on.

    .venv/bin/python benchmarks/host_cost.py                       # tiny, 16 tokens, CPU
    python benchmarks/host_cost.py --model random:gpt2 --device cuda --dtype bfloat16

(a) One call of the per-token reductions (`Reductions.stats`) on a (1, tokens, d) input,
eager and compiled, alone in a loop: the host's cost per norm and call. (b) A stats run of
the model, split into its phases: entering `capture` (hooks on, eval mode), the forward
pass with its hooks, leaving it, and `result()` (records and weight summaries to the host,
result objects), against the bare forward. Medians over repeats, in milliseconds
(microseconds for a call); on CUDA each phase ends with a synchronize. Printed, never
asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from lninspect import capture, find_norms
from lninspect.hooks.fused import Reductions
from lninspect.model.loading import load_model

MODES = ("eager", "compiled")


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def per_call(fn: Callable[[], object], device: torch.device, calls: int, repeats: int) -> float:
    """Median microseconds per call of `fn` over `repeats` loops of `calls` calls."""
    for _ in range(calls):
        fn()
    times = []
    for _ in range(repeats):
        start = clock(device)
        for _ in range(calls):
            fn()
        times.append((clock(device) - start) / calls * 1e6)
    return statistics.median(times)


def phases(model: torch.nn.Module, ids: torch.Tensor, mode: str) -> list[float]:
    """Seconds of: enter capture, forward, exit, result(); and the bare forward."""
    device, norms = ids.device, find_norms(model)
    start = clock(device)
    with capture(model, norms, reductions=mode) as cap:
        entered = clock(device)
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)
        forward = clock(device)
    left = clock(device)
    cap.result()
    done = clock(device)
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False)
    bare = clock(device)
    return [entered - start, forward - entered, left - forward, done - left, bare - done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model, device, width = loaded.model, loaded.device, loaded.info.hidden_size or 768
    ids = torch.randint(0, model.config.vocab_size, (1, args.tokens)).to(device)
    print(
        f"{args.model} · {args.dtype} on {device} · 1 x {args.tokens} tokens · "
        f"{len(find_norms(model))} norms · torch {torch.__version__}"
    )
    x = torch.randn(1, args.tokens, width, device=device).to(loaded.model.dtype)
    with torch.inference_mode():
        for mode in MODES:
            call = partial(Reductions(mode).stats, x, x, 1e-5, 1)
            cost = per_call(call, device, 500, args.repeats)
            print(f"one Reductions.stats call, {mode:<8} {cost:8.1f} us")
    names = ("enter capture", "forward with hooks", "leave capture", "result()", "bare forward")
    for mode in MODES:
        for _ in range(5):  # warm-up, compiles included
            phases(model, ids, mode)
        runs = [phases(model, ids, mode) for _ in range(args.repeats)]
        print(f"stats run, {mode} reductions (median ms)")
        for i, name in enumerate(names):
            print(f"  {name:<20}{statistics.median(r[i] for r in runs) * 1e3:8.3f}")


if __name__ == "__main__":
    main()
