"""Cost of `lninspect.watch` on a training step, against the bare step in the same process.

    .venv/bin/python benchmarks/watch.py                        # reference GPT, CPU
    .venv/bin/python benchmarks/watch.py --model random:gpt2 --device cuda --tokens 1024

Three copies of one model (same weights), each with its own AdamW, take training steps in
turn (forward, backward of the LM loss, optimizer step, zero_grad): bare; watched on a step
that is not recorded (the watcher exists, `step()` is called, no hook is attached); watched
on a recorded step (every=1: capture hooks, parameter-gradient hooks, the record built,
one JSONL line written and fsynced). Time: median over interleaved repeats. Peak memory: as
in benchmarks/overhead.py (the bytes allocated above the level before the step). Goals:
a step that is not recorded costs nothing (time <= 1.01), a recorded one stays within the
capture goal of grads (time <= 1.10, memory <= 1.05). Printed as ratios; never asserted.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from overhead import peak_bytes, timed  # noqa: E402

import lninspect  # noqa: E402
from lninspect.model.loading import load_model  # noqa: E402
from lninspect.placement.experiment import initialize  # noqa: E402
from lninspect.placement.refgpt import GPT, RefGPTConfig  # noqa: E402

GOALS = {"not recorded time": 1.01, "recorded time": 1.10, "recorded memory": 1.05}


def build(name: str, device: str, tokens: int) -> tuple[torch.nn.Module, Callable, int]:
    """The model, its loss function (ids -> loss) and its vocabulary size."""
    if name == "refgpt":
        config = RefGPTConfig(
            vocab_size=3072, context=tokens + 1, layers=6, d_model=256, heads=4, mlp_ratio=4
        )
        model = GPT(config)
        initialize(model, "gpt2", torch.Generator().manual_seed(0))
        return model.to(device), lambda m, ids: m.loss(ids), config.vocab_size
    loaded = load_model(name, device=device)
    vocab = loaded.model.config.vocab_size
    return loaded.model, lambda m, ids: m(input_ids=ids, labels=ids, use_cache=False).loss, vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="refgpt", help="refgpt, or any lninspect MODEL spec")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base, loss_of, vocab = build(args.model, args.device, args.tokens)
    base.train()
    models = {name: copy.deepcopy(base) for name in ("bare", "not recorded", "recorded")}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.tokens), generator=generator).to(device)
    folder = Path(tempfile.mkdtemp(prefix="lninspect-watch-bench-"))
    idle = lninspect.watch(models["not recorded"], every=10**9, log_dir=folder / "a", start_step=1)
    busy = lninspect.watch(models["recorded"], every=1, log_dir=folder / "b")
    with idle as idle_watcher, busy as busy_watcher:
        watchers = {"bare": None, "not recorded": idle_watcher, "recorded": busy_watcher}

        def step(name: str) -> Callable[[], None]:
            def run() -> None:
                model, optimizer, watcher = models[name], optimizers[name], watchers[name]
                loss = loss_of(model, ids)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if watcher is not None:
                    watcher.step(loss=loss)

            return run

        runs = {name: step(name) for name in models}
        for run in runs.values():  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(timed(run, device))
        peaks = {name: peak_bytes(run, device) for name, run in runs.items()}
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.model} · {args.batch} x {args.tokens} tokens · {device} · "
        f"{torch.get_num_threads()} threads · torch {torch.__version__} · {args.repeats} repeats"
    )
    print(f"{'training step':<16}{'median s':>10}{'peak MiB':>10}")
    for name in runs:
        print(f"{name:<16}{medians[name]:>10.4f}{peaks[name] / 2**20:>10.1f}")
    print(f"\n{'ratio to bare':<24}{'measured':>10}{'goal':>8}")
    for what, value in (
        ("not recorded time", medians["not recorded"] / medians["bare"]),
        ("recorded time", medians["recorded"] / medians["bare"]),
        ("recorded memory", peaks["recorded"] / peaks["bare"]),
    ):
        verdict = "ok" if value <= GOALS[what] else "MISSED"
        print(f"{what:<24}{value:>10.3f}{'<= ' + str(GOALS[what]):>8}  {verdict}")


if __name__ == "__main__":
    main()
