"""Cost of `lninspect.watch` on a training step, against the bare step in the same process.

    .venv/bin/python benchmarks/watch.py                        # reference GPT, CPU
    .venv/bin/python benchmarks/watch.py --model random:gpt2 --device cuda --tokens 1024

Three copies of one model (same weights), each with its own AdamW, take training steps in
turn (forward, backward of the LM loss, optimizer step, zero_grad): bare; watched on a step
that is not recorded (the watcher exists, `step()` is called, no hook is attached); watched
on a recorded step (every=1: capture hooks, the parameter gradient norms, the record built,
one JSONL line written and fsynced). Each round of repeats starts with the next copy in
turn. Time: wall and process CPU time (the latter less disturbed by other jobs; user plus
system time), and its user part alone (the system part is mostly page faults of the C
heap, also printed, which vary from run to run), each the median of the per-round ratios
to the bare step, with their quartiles. Peak
memory: as in benchmarks/overhead.py (the bytes allocated above the level before the step).
Goals: a step that is not recorded costs nothing (time <= 1.01), a recorded one at most
5 % (time <= 1.05, memory <= 1.05). Printed; never asserted. `--profile`: one recorded step
under cProfile, its time split by phase (hooks, parameter norms, record, fsync).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from overhead import peak_bytes, timed  # noqa: E402

import lninspect  # noqa: E402
from lninspect.model.loading import load_model  # noqa: E402
from lninspect.placement.experiment import initialize  # noqa: E402
from lninspect.placement.refgpt import GPT, RefGPTConfig  # noqa: E402

GOALS = {"not recorded time": 1.01, "recorded time": 1.05, "recorded memory": 1.05}
CLOCKS = ("wall", "cpu", "user", "faults")  # per step; cpu = user + system (kernel) time


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
    parser.add_argument("--profile", action="store_true", help="where a recorded step's time goes")
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
        times = interleaved(runs, args.repeats, device)
        peaks = {name: peak_bytes(run, device) for name, run in runs.items()}
        phases = profile_phases(runs["recorded"]) if args.profile else None
    report(args, device, times, peaks)
    if phases is not None:
        print_phases(*phases)


def interleaved(
    runs: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each run per round; each round starts with the next run in
    turn, so that none always pays for coming first (its weights out of the caches). The
    process's CPU time is what other jobs on a shared machine disturb least."""
    names = list(runs)
    times: dict[str, dict[str, list[float]]] = {n: {c: [] for c in CLOCKS} for n in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            before = resource.getrusage(resource.RUSAGE_SELF)
            times[name]["wall"].append(timed(runs[name], device))
            after = resource.getrusage(resource.RUSAGE_SELF)
            user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            times[name]["cpu"].append(user + system)
            times[name]["user"].append(user)
            times[name]["faults"].append(after.ru_minflt - before.ru_minflt)
    return times


def report(
    args: argparse.Namespace,
    device: torch.device,
    times: dict[str, dict[str, list[float]]],
    peaks: dict[str, float],
) -> None:
    """Median times and peaks, and the ratios to bare: median of the per-round ratios, with
    their quartiles as the spread."""
    print(
        f"{args.model} · {args.batch} x {args.tokens} tokens · {device} · "
        f"{torch.get_num_threads()} threads · torch {torch.__version__} · {args.repeats} repeats"
    )
    heads = f"{'wall s':>10}{'cpu s':>10}{'user s':>10}{'faults':>8}{'peak MiB':>10}"
    print(f"{'training step':<16}{heads}")
    for name, clocks in times.items():
        wall, cpu, user, faults = (statistics.median(clocks[c]) for c in CLOCKS)
        print(
            f"{name:<16}{wall:>10.4f}{cpu:>10.4f}{user:>10.4f}{faults:>8.0f}"
            f"{peaks[name] / 2**20:>10.1f}"
        )
    print(f"\n{'ratio to bare':<28}{'median':>8}{'q25':>8}{'q75':>8}{'goal':>9}")
    for what, name in (("not recorded time", "not recorded"), ("recorded time", "recorded")):
        for clock in ("wall", "cpu", "user"):
            pairs = zip(times[name][clock], times["bare"][clock], strict=True)
            q25, median, q75 = statistics.quantiles([a / b for a, b in pairs], n=4)
            label = f"{what} ({clock})"
            print(f"{label:<28}{median:>8.3f}{q25:>8.3f}{q75:>8.3f}{verdict(what, median):>9}")
    memory = peaks["recorded"] / peaks["bare"]
    print(f"{'recorded memory':<28}{memory:>8.3f}{'':>16}{verdict('recorded memory', memory):>9}")


def verdict(what: str, value: float) -> str:
    return ("<= " if value <= GOALS[what] else "> ") + str(GOALS[what])


PHASES = {  # what a recorded step adds: (file, functions) at the top of each phase
    "capture forward hooks": ("capture.py", ("hook",)),
    "capture gradient hooks": ("capture.py", ("on_grad",)),
    "parameter grad norms": ("params.py", ("_take",)),
    "arm the next step, gate": ("watcher.py", ("arm", "_on_pass", "_after_pass")),
    "record: result, line": ("watcher.py", ("finish",)),
    "  of which fsync": ("~", ("<built-in method posix.fsync>",)),
}


def profile_phases(run: Callable[[], None]) -> tuple[float, dict[str, float]]:
    """One recorded step under cProfile: its seconds, and the cumulative seconds per phase."""
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(run)
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    phases = dict.fromkeys(PHASES, 0.0)
    for (file, _, function), (_, _, _, cumulative, _) in stats.items():
        for phase, (where, functions) in PHASES.items():
            if Path(file).name == where and function in functions:
                phases[phase] += cumulative
    return total, phases


def print_phases(total: float, phases: dict[str, float]) -> None:
    print(f"\none recorded step under cProfile: {total:.3f} s")
    for phase, seconds in phases.items():
        print(f"  {phase:<36}{seconds:>8.4f} s{100 * seconds / total:>7.1f} %")


if __name__ == "__main__":
    main()
