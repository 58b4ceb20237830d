"""Cost of `lninspect.watch` on a training step, against the bare step in the same process.

    .venv/bin/python benchmarks/watch.py                        # reference GPT, CPU
    .venv/bin/python benchmarks/watch.py --copies               # three copies of the model
    .venv/bin/python benchmarks/watch.py --model random:gpt2 --device cuda --tokens 1024

One model, watched with every=2, takes training steps (forward, backward of the LM loss,
optimizer step, zero_grad): recorded and not recorded steps alternate. A step that is not
recorded has no hook at all on the model or its parameters (tests/test_watch.py checks
it): it is the bare model's step. Each recorded step (capture hooks, the parameter gradient
norms, the record built, one JSONL line written, its fsync in the sink's thread) is
divided by the mean of its two neighbours, so that the ratio is paired and a machine
whose speed drifts moves both. Time: wall and process CPU time (user plus system; what
other jobs disturb least), and its user part alone; the median of the ratios with their
quartiles. Peak memory: as in benchmarks/overhead.py (the bytes allocated above the level
before the step), a recorded step against a step that is not recorded.

`--copies`: the design of earlier rounds: three copies of the model (same weights, each its
own AdamW) take steps in turn, bare, watched but never recorded, watched and always
recorded, each round starting with the next copy; ratios to the bare copy. It also shows
that a step not recorded costs what a bare one does, but it runs three working sets where
a training run has one: on a CPU whose cache holds one model's step and not three, the
memory-bound passes of the statistics cost more there (docs/training.md, "Cost").

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
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from overhead import peak_bytes, peak_once, timed  # noqa: E402

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


Clocks = dict[str, float]  # CLOCKS -> one step's value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="refgpt", help="refgpt, or any lninspect MODEL spec")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9, help="recorded steps (rounds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--copies", action="store_true", help="three copies (earlier design)")
    parser.add_argument("--reductions", default="auto", help="auto, eager or compiled")
    parser.add_argument("--profile", action="store_true", help="where a recorded step's time goes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base, loss_of, vocab = build(args.model, args.device, args.tokens)
    base.train()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.tokens), generator=generator).to(device)
    design = "three copies" if args.copies else "one model, every=2"
    print(
        f"{args.model} · {args.batch} x {args.tokens} tokens · {device} · "
        f"{torch.get_num_threads()} threads · torch {torch.__version__} · {design} · "
        f"reductions {args.reductions} · {args.repeats} repeats"
    )
    measure = copies if args.copies else one_model
    phases = measure(args, base, lambda model, watcher: trainer(model, loss_of, ids, watcher))
    if phases is not None:
        print_phases(*phases)


Trainer = Callable[[torch.nn.Module, Any], Callable[[], None]]


def trainer(
    model: torch.nn.Module, loss_of: Callable, ids: torch.Tensor, watcher: Any
) -> Callable[[], None]:
    """One training step of `model` with its own AdamW, ended by `watcher.step` if any."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        loss = loss_of(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if watcher is not None:
            watcher.step(loss=loss)

    return run


def one_model(args: argparse.Namespace, model: torch.nn.Module, make: Trainer) -> Any:
    """Recorded and not recorded steps of one model in turn: each recorded step against the
    mean of its two neighbours. Returns the profiled phases (--profile) or None."""
    device = torch.device(args.device)
    folder = Path(tempfile.mkdtemp(prefix="lninspect-watch-bench-"))
    with lninspect.watch(model, every=2, log_dir=folder, **watch_options(args)) as watcher:
        run = make(model, watcher)
        for _ in range(4):  # warm-up
            run()
        if watcher.armed:  # the first step measured is not recorded: each recorded one has two
            run()
        steps = [(watcher.armed, clocked(run, device)) for _ in range(2 * args.repeats + 1)]
        peaks: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(6):
            peaks[watcher.armed].append(peak_once(run, device))
        if args.profile and not watcher.armed:
            run()
        phases = profile_phases(run) if args.profile else None
    print_table(
        {
            name: ([c for armed, c in steps if armed == kind], statistics.median(peaks[kind]))
            for kind, name in ((False, "not recorded"), (True, "recorded"))
        }
    )
    print(f"\n{'recorded / its neighbours':<28}{'median':>8}{'q25':>8}{'q75':>8}{'goal':>9}")
    for clock in ("wall", "cpu", "user"):
        ratios = [
            c[clock] / ((steps[i - 1][1][clock] + steps[i + 1][1][clock]) / 2)
            for i, (armed, c) in enumerate(steps)
            if armed
        ]
        print_ratio(f"recorded time ({clock})", "recorded time", ratios)
    print_memory(statistics.median(peaks[True]) / statistics.median(peaks[False]))
    return phases


def copies(args: argparse.Namespace, base: torch.nn.Module, make: Trainer) -> Any:
    """Three copies in turn, bare, never recorded and always recorded: ratios to bare."""
    device = torch.device(args.device)
    models = {name: copy.deepcopy(base) for name in ("bare", "not recorded", "recorded")}
    folder = Path(tempfile.mkdtemp(prefix="lninspect-watch-bench-"))
    options = watch_options(args)
    idle = lninspect.watch(
        models["not recorded"], every=10**9, log_dir=folder / "a", start_step=1, **options
    )
    busy = lninspect.watch(models["recorded"], every=1, log_dir=folder / "b", **options)
    with idle as idle_watcher, busy as busy_watcher:
        watchers = {"bare": None, "not recorded": idle_watcher, "recorded": busy_watcher}
        runs = {name: make(model, watchers[name]) for name, model in models.items()}
        for run in runs.values():  # warm-up
            run()
        times = interleaved(runs, args.repeats, device)
        peaks = {name: peak_bytes(run, device) for name, run in runs.items()}
        phases = profile_phases(runs["recorded"]) if args.profile else None
    print_table({name: (rows, peaks[name]) for name, rows in times.items()})
    print(f"\n{'ratio to bare':<28}{'median':>8}{'q25':>8}{'q75':>8}{'goal':>9}")
    for what, name in (("not recorded time", "not recorded"), ("recorded time", "recorded")):
        for clock in ("wall", "cpu", "user"):
            pairs = zip(times[name], times["bare"], strict=True)
            print_ratio(f"{what} ({clock})", what, [a[clock] / b[clock] for a, b in pairs])
    print_memory(peaks["recorded"] / peaks["bare"])
    return phases


def watch_options(args: argparse.Namespace) -> dict[str, Any]:
    """`reductions` when not the default (so that an older lninspect on PYTHONPATH runs too)."""
    return {"reductions": args.reductions} if args.reductions != "auto" else {}


def clocked(run: Callable[[], None], device: torch.device) -> Clocks:
    """One run's wall seconds, process CPU seconds (user + system), user seconds and minor
    page faults. The process's CPU time is what other jobs on a shared machine disturb least."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = timed(run, device)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {
        "wall": wall,
        "cpu": user + system,
        "user": user,
        "faults": after.ru_minflt - before.ru_minflt,
    }


def interleaved(
    runs: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, list[Clocks]]:
    """Each run's clocks per round; each round starts with the next run in turn, so that
    none always pays for coming first (its weights out of the caches)."""
    names = list(runs)
    times: dict[str, list[Clocks]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(clocked(runs[name], device))
    return times


def print_table(rows: dict[str, tuple[list[Clocks], float]]) -> None:
    """The median of each clock per kind of step, and its peak memory."""
    heads = f"{'wall s':>10}{'cpu s':>10}{'user s':>10}{'faults':>8}{'peak MiB':>10}"
    print(f"{'training step':<16}{heads}")
    for name, (clocks, peak) in rows.items():
        wall, cpu, user, faults = (statistics.median(row[c] for row in clocks) for c in CLOCKS)
        print(
            f"{name:<16}{wall:>10.4f}{cpu:>10.4f}{user:>10.4f}{faults:>8.0f}{peak / 2**20:>10.1f}"
        )


def print_memory(ratio: float) -> None:
    print(f"{'recorded memory':<28}{ratio:>8.3f}{'':>16}{verdict('recorded memory', ratio):>9}")


def print_ratio(label: str, goal: str, ratios: list[float]) -> None:
    """The median of the ratios, their quartiles as the spread, and the goal's verdict."""
    q25, median, q75 = statistics.quantiles(ratios, n=4)
    print(f"{label:<28}{median:>8.3f}{q25:>8.3f}{q75:>8.3f}{verdict(goal, median):>9}")


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
