"""`lninspect.watch` in a real multi-process run: DDP on the CPU (gloo), recorded every 2 steps.

    torchrun --standalone --nproc_per_node 2 benchmarks/watch_ddp.py --steps 12

The reference GPT (6 layers, width 256 unless told) trains on random tokens, each rank its
own batch, under DDP with `lninspect.watch(every=2)`. Printed by rank 0: the median time
of a recorded and of a step that is not recorded (and their spread), the time of the end
of a recorded step (`Watcher.finish`: the record, the line) and of the combining over the
ranks in it (lninspect.monitor.ranks.combine: bins, two collectives), and the log's last
record in short. Printed; never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import lninspect
from lninspect.monitor import watcher as watcher_module
from lninspect.monitor.watcher import Watcher
from lninspect.placement.experiment import initialize
from lninspect.placement.refgpt import GPT, RefGPTConfig
from lninspect.results.watch import read_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="sequences per rank")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    config = RefGPTConfig(
        vocab_size=3072, context=args.tokens, layers=6, d_model=args.width, heads=4, mlp_ratio=4
    )
    model = GPT(config)
    initialize(model, "gpt2", torch.Generator().manual_seed(0))
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(1 + rank)
    folder = Path(tempfile.mkdtemp(prefix="lninspect-ddp-")) if rank == 0 else Path("unused")
    times: dict[bool, list[float]] = {True: [], False: []}
    finish: list[float] = []
    combining: list[float] = []
    with lninspect.watch(ddp, every=2, log_dir=folder, tensorboard=False) as w:
        timed_finish(w, finish, combining)
        for step in range(args.steps):
            ids = torch.randint(0, 3072, (args.batch, args.tokens + 1), generator=generator)
            start = time.perf_counter()
            logits = ddp(ids[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            w.step(loss=loss)
            if step >= 2:  # the first two are warm-up
                times[step % 2 == 0].append(time.perf_counter() - start)
    if rank == 0:
        report(args, times, finish, combining, folder)
    dist.destroy_process_group()


def timed_finish(watcher: Watcher, seconds: list[float], combining: list[float]) -> None:
    """Time every `finish` of the watcher (the end of a recorded step), and its `combine`."""
    finish, combine = watcher.finish, watcher_module.combine

    def timed(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        finish(*args, **kwargs)
        seconds.append(time.perf_counter() - start)

    def timed_combine(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        combined = combine(*args, **kwargs)
        combining.append(time.perf_counter() - start)
        return combined

    watcher.finish = timed  # type: ignore[method-assign]
    watcher_module.combine = timed_combine  # type: ignore[assignment]


def report(
    args: argparse.Namespace,
    times: dict[bool, list[float]],
    finish: list[float],
    combining: list[float],
    folder: Path,
) -> None:
    world = dist.get_world_size()
    print(
        f"refgpt width {args.width} · {world} processes x {args.batch} x {args.tokens} tokens · "
        f"gloo · {torch.get_num_threads()} threads each · torch {torch.__version__}"
    )
    for recorded, label in ((False, "not recorded"), (True, "recorded")):
        values = times[recorded]
        print(
            f"{label:<14} median {statistics.median(values):.3f} s  "
            f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} steps)"
        )
    print(
        f"end of a recorded step (Watcher.finish): median {statistics.median(finish):.4f} s, "
        f"of which combining over the ranks {statistics.median(combining):.4f} s"
    )
    record = read_log(folder).records[-1]
    top = max(record.norms, key=lambda n: n.absmax)
    print(
        f"last record: step {record.step}, world_size {record.world_size}, grads {record.grads}, "
        f"tokens {record.tokens}, loss {record.loss:.4f}; largest |x| {top.absmax} at "
        f"{top.name} dim {top.absmax_dim}, rank {top.absmax_rank}, token {top.absmax_token}"
    )


if __name__ == "__main__":
    main()
