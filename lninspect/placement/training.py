"""`lninspect placement --train`: the first steps of training of the chosen norm layouts
(Xiong et al. 2020, Sec. 3 and Fig. 1: post-LN needs a learning-rate warm-up, pre-LN not).

For each seed, layout, warm-up (the given one, and none) and learning rate: build the
reference GPT (every layout of a seed starts from the same draws), then train it with
Adam (betas (0.9, 0.98), eps 1e-9, no weight decay: the Transformer setting the paper
studies) on random windows of the training tokens, the same windows for every run of a seed,
at a learning rate that rises linearly over the warm-up steps and then stays constant.

Step t is the model after t updates. At every step: the training loss of the batch, the
global gradient norm and per block the gradient norms of W^{2,l} (FFN output) and of the
whole block. Every `eval_every` steps (and at the end): the held-out loss, in eval mode.
Every `stats_every` steps, from the training step itself (dropout on, as the run has it):
the residual stream's variance after the embeddings and after each block, and every norm's
statistics as lninspect.watch records them (its median input std and largest |x|), written
to a watch log per run when a log folder is given (`lninspect run` reads it). With
`maps` (--map), at the first and the last held-out evaluation, each norm's map fitted on the
held-out windows (lninspect.placement.maps). A run whose
loss or gradient is not finite, or whose loss exceeds EXPLODED x its first loss, is marked
diverged at that step and stopped; its remaining steps stay NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch

from lninspect.errors import LninspectError
from lninspect.model.loading import resolve_device
from lninspect.monitor.watcher import watch
from lninspect.norms.discovery import NormInfo, find_norms
from lninspect.options import Progress
from lninspect.placement.data import (
    Tokens,
    check_length,
    held_out_windows,
    load_tokens,
    sample_batch,
    unigram_loss,
)
from lninspect.placement.experiment import build_model, threads_for
from lninspect.placement.layouts import FINAL, layout_named
from lninspect.placement.maps import map_fits, samples_map
from lninspect.placement.memory import check_placement_memory
from lninspect.placement.refgpt import GPT, Block, DynamicTanh
from lninspect.results.placement import PlacementConfig, PlacementResult
from lninspect.results.placement_training import (
    BETAS,
    EPS,
    MAP_AT,
    MAP_FITS,
    TrainConfig,
    TrainingResult,
    TrainRun,
    auto_target,
    finish_runs,
)
from lninspect.results.watch import LOG_NAME, WatchRecord
from lninspect.statistics import INPUT_DENOMINATOR

EXPLODED = 1.5  # a training loss above 1.5x the run's first loss counts as diverged


@dataclass(frozen=True)
class Grid:
    """One cell of the grid: a layout, a warm-up length (0: none) and a learning rate."""

    layout: str
    warmup: int
    lr: float

    def label(self) -> str:
        warm = f"warm-up {self.warmup}" if self.warmup else "no warm-up"
        return f"{layout_named(self.layout).label}, {warm}, lr {self.lr:g}"


def train_placement(
    config: PlacementConfig,
    train: TrainConfig,
    file: Path | None = None,
    threads: int | None = 1,
    progress: Progress | None = None,
    log_dir: Path | None = None,
) -> PlacementResult:
    """Every cell of the grid for every seed; `config.layers` holds the one depth trained.

    `log_dir`: a folder for one watch log per run (`run_log`); None: no log written.
    """
    device = resolve_device(train.device)
    check_placement_memory(config, device, training=True)  # before any model is built
    tokens = load_tokens(file)
    check_length(tokens, config.seq_len)
    config = replace(config, tokens="text", vocab_size=tokens.vocab_size)
    train = replace(
        train,
        device=str(device),
        text=tokens.source,
        train_tokens=len(tokens.train),
        held_out_tokens=len(tokens.held_out),
    )
    grid = [
        Grid(layout, warmup, lr)
        for layout in config.layouts
        for warmup in sorted({train.warmup, 0}, reverse=True)
        for lr in train.lrs
    ]
    records: dict[Grid, list[_Record]] = {cell: [] for cell in grid}
    norms: dict[str, list[NormInfo]] = {}
    jobs = [(seed, cell) for seed in range(config.seeds) for cell in grid]
    logs = {job: run_log(log_dir, *job) for job in jobs}
    _check_logs(logs)
    with threads_for(threads if device.type == "cpu" else None):
        for index, (seed, cell) in enumerate(jobs):
            step_done = _reporter(
                progress, index * train.steps, len(jobs) * train.steps, seed, cell
            )
            log = logs[seed, cell]
            run = _train_one(config, train, tokens, (cell, seed, log), norms, step_done)
            records[cell].append(run)
    runs = [_to_run(cell, records[cell], train) for cell in grid]
    unigram = unigram_loss(tokens)
    target = train.target_loss if train.target_loss is not None else auto_target(runs)
    training = TrainingResult(
        config=train, runs=finish_runs(runs, target), target_loss=target, unigram_loss=unigram
    )
    notes = _notes(train, tokens)
    return PlacementResult(config=config, runs=[], training=training, notes=notes)


def _reporter(
    progress: Progress | None, done: int, total: int, seed: int, cell: Grid
) -> Callable[[int], None]:
    """What one run calls after each step: the grid's progress, counted in steps."""

    def step_done(step: int) -> None:
        if progress is not None:
            progress(done + step, total, f"seed {seed}: {cell.label()}")

    return step_done


def _notes(train: TrainConfig, tokens: Tokens) -> list[str]:
    notes = [
        f"trained on {tokens.source}: {len(tokens.train):,} training and "
        f"{len(tokens.held_out):,} held-out tokens ({tokens.documents} documents, "
        "the bundled tokenizer)"
    ]
    if train.warmup >= train.steps:
        notes.append(
            f"the warm-up ({train.warmup} steps) is not shorter than the run ({train.steps} "
            "steps): the runs with warm-up never reach their full learning rate"
        )
    return notes


def run_log(log_dir: Path | None, seed: int, cell: Grid) -> Path | None:
    """The watch log folder of one run: `<log_dir>/<layout>-warmup<w>-lr<lr>-seed<s>`."""
    if log_dir is None:
        return None
    return log_dir / f"{cell.layout}-warmup{cell.warmup}-lr{cell.lr:g}-seed{seed}"


def _check_logs(logs: dict[tuple[int, Grid], Path | None]) -> None:
    """Refuse, before any training, a log that a run would find already written."""
    for folder in logs.values():
        if folder is not None and (folder / LOG_NAME).exists():
            raise LninspectError(
                f"'{folder / LOG_NAME}' already exists: choose another log_dir (the logs of "
                "a placement run are never appended to or replaced)"
            )


@dataclass
class _Record:
    """What one seed of one grid cell recorded (NaN after a divergence)."""

    train_loss: np.ndarray  # (steps,)
    grad_norm: np.ndarray  # (steps,) global
    layer_grads: dict[str, np.ndarray]  # "ffn_out" | "block" -> (steps, L)
    held_out: np.ndarray  # (evals,)
    stream_var: np.ndarray  # (strides, L + 1) after the embeddings and each block
    input_denominator: dict[str, np.ndarray]  # the layout's norm keys -> (strides, L; ln_f: 1)
    absmax: dict[str, np.ndarray]  # the same keys and shapes: the largest |x| of the input
    diverged_at: int | None
    # --map: MAP_FITS -> the norm keys -> (len(MAP_AT), L; ln_f: 1); None: not sampled
    maps: dict[str, dict[str, np.ndarray]] | None = None


class _Kept:
    """A watch sink that keeps the records of one run in memory."""

    def __init__(self) -> None:
        self.records: list[WatchRecord] = []

    def write(self, record: WatchRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def _train_one(
    config: PlacementConfig,
    train: TrainConfig,
    tokens: Tokens,
    job: tuple[Grid, int, Path | None],
    norms: dict[str, list[NormInfo]],
    step_done: Callable[[int], None],
) -> _Record:
    """Train one model of the cell from the seed (job: cell, seed, log folder); record every
    step."""
    cell, seed, log = job
    device = torch.device(train.device)
    layers = config.layers[0]
    model = _model(config, train, cell.layout, layers, seed).to(device)
    found = _norms_of(model, cell.layout, norms)  # before the seed: discovery draws a probe
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cell.lr, betas=BETAS, eps=EPS, weight_decay=0.0
    )
    data = torch.Generator().manual_seed(seed)  # the same batches for every cell of a seed
    torch.manual_seed(seed)  # dropout masks
    held = held_out_windows(tokens.held_out, train.eval_windows, config.seq_len).to(device)
    record = _empty_record(train, layers, cell.layout)
    kept = _Kept()
    first = math.nan
    with watch(
        model,
        every=train.stats_every,
        log_dir=log,
        norms=found,
        sinks=[kept],
        optimizer=optimizer,
        tensorboard=False,
        wandb=False,
    ) as watcher:
        for step in range(train.steps + 1):
            if step in train.eval_steps():
                at = train.eval_steps().index(step)
                record.held_out[at] = _held_out_loss(model, held, config)
                if record.maps is not None and step in (0, train.steps):
                    fits = map_fits(model, found, held, config.batch, layers)
                    _keep_map(record.maps, MAP_AT.index("end" if step else "start"), fits)
            if step == train.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cell.lr, cell.warmup)
            batch = sample_batch(tokens.train, config.batch, config.seq_len, data).to(device)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            stream: list[torch.Tensor] | None = [] if watcher.records(step) else None
            loss = model.loss(batch, stream)
            loss.backward()
            numbers = _step_numbers(model, loss, stream or [])  # one transfer
            first = numbers[0] if step == 0 else first
            _keep_step(record, step, numbers, layers, train.stats_every)
            watcher.step(loss=numbers[0])  # writes the record of a recording step
            step_done(step + 1)
            if _diverged(numbers[0], numbers[1], first):
                record.diverged_at = step
                step_done(train.steps)
                break
            optimizer.step()
    _keep_norms(record, kept.records, train.stats_every)
    return record


def lr_at(step: int, lr: float, warmup: int) -> float:
    """The learning rate of update `step` (0-based): linear warm-up over `warmup`, then `lr`."""
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr


def _model(config: PlacementConfig, train: TrainConfig, layout: str, layers: int, seed: int) -> GPT:
    """The seed's initial weights: the same draws for every layout and cell."""
    generator = torch.Generator().manual_seed(seed)
    return build_model(config, layout, layers, generator, dropout=train.dropout)


def _norms_of(model: GPT, layout: str, found: dict[str, list[NormInfo]]) -> list[NormInfo]:
    """The norms of `model`: found once per layout, then rebound to each new model."""
    if layout not in found:
        found[layout] = find_norms(model, include=(DynamicTanh,))
    return [replace(info, module=model.get_submodule(info.name)) for info in found[layout]]


def _diverged(loss: float, grad_norm: float, first: float) -> bool:
    return not (math.isfinite(loss) and math.isfinite(grad_norm)) or loss > EXPLODED * first


@torch.no_grad()
def _held_out_loss(model: GPT, windows: torch.Tensor, config: PlacementConfig) -> float:
    """Mean next-token cross-entropy over the held-out windows, dropout off."""
    model.eval()
    losses = [model.loss(chunk) for chunk in windows.split(config.batch)]
    sizes = [len(chunk) for chunk in windows.split(config.batch)]
    total = sum(loss * size for loss, size in zip(losses, sizes, strict=True))
    return float(total / sum(sizes))


def _step_numbers(model: GPT, loss: torch.Tensor, stream: list[torch.Tensor]) -> list[float]:
    """[loss, global gradient norm, |dL/dW^{2,l}| per block, |dL/d block l| per block, then
    the stream's variance after the embeddings and each block when recorded]."""
    blocks = cast(list[Block], list(model.blocks))
    every = [p.grad for p in model.parameters() if p.grad is not None]
    ffn_out = [_norm([b.mlp.fc_out.weight.grad]) for b in blocks]
    whole = [_norm([p.grad for p in b.parameters()]) for b in blocks]
    variances = [v.float() for v in stream]
    values = torch.stack([loss.detach().float(), _norm(every), *ffn_out, *whole, *variances])
    return cast(list[float], values.tolist())


def _norm(grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
    present = [g for g in grads if g is not None]
    return torch.nn.utils.get_total_norm(present).float()


def _keep_step(record: _Record, step: int, numbers: list[float], layers: int, every: int) -> None:
    record.train_loss[step], record.grad_norm[step] = numbers[0], numbers[1]
    record.layer_grads["ffn_out"][step] = numbers[2 : 2 + layers]
    record.layer_grads["block"][step] = numbers[2 + layers : 2 + 2 * layers]
    if len(numbers) > 2 + 2 * layers:  # a recorded step: the stream too
        record.stream_var[step // every] = numbers[2 + 2 * layers :]


def _keep_norms(record: _Record, watched: Sequence[WatchRecord], every: int) -> None:
    """Every norm's median input denominator (std; rms under RMSNorm) and largest |x| at each
    recorded step."""
    for step_record in watched:
        row = step_record.step // every
        columns: dict[str, list[tuple[float, float]]] = {
            key: [] for key in record.input_denominator
        }
        for norm in step_record.norms:  # model order: blocks.0.ln_1, ..., ln_f
            median = norm.quantiles[INPUT_DENOMINATOR].q50
            columns[norm.name.rsplit(".", 1)[-1]].append((median, norm.absmax))
        for key, pairs in columns.items():
            record.input_denominator[key][row] = [median for median, _ in pairs]
            record.absmax[key][row] = [peak for _, peak in pairs]


def _keep_map(maps: dict[str, dict[str, np.ndarray]], at: int, fits: dict[str, np.ndarray]) -> None:
    """One evaluation's fits (map_fits: key -> (MAP_FITS, L)) into the record's row `at`."""
    for i, fit in enumerate(MAP_FITS):
        for key, values in fits.items():
            maps[fit][key][at] = values[i]


def _empty_record(train: TrainConfig, layers: int, layout: str) -> _Record:
    nan = np.full
    strides = len(train.stats_steps())
    shapes = {k: (strides, 1 if k == FINAL else layers) for k in layout_named(layout).norm_keys()}
    return _Record(
        train_loss=nan(train.steps, np.nan),
        grad_norm=nan(train.steps, np.nan),
        layer_grads={k: nan((train.steps, layers), np.nan) for k in ("ffn_out", "block")},
        held_out=nan(len(train.eval_steps()), np.nan),
        stream_var=nan((strides, layers + 1), np.nan),
        input_denominator={k: nan(shape, np.nan) for k, shape in shapes.items()},
        absmax={k: nan(shape, np.nan) for k, shape in shapes.items()},
        diverged_at=None,
        maps={
            fit: {k: nan((len(MAP_AT), shape[1]), np.nan) for k, shape in shapes.items()}
            for fit in MAP_FITS
        }
        if train.maps and samples_map(layout_named(layout))
        else None,
    )


def _to_run(cell: Grid, records: list[_Record], train: TrainConfig) -> TrainRun:
    """Stack the seeds of one cell: every array gains a leading seed axis."""
    keys = layout_named(cell.layout).norm_keys()
    run = TrainRun(
        layout=cell.layout,
        warmup=cell.warmup,
        lr=cell.lr,
        train_loss=np.stack([r.train_loss for r in records]),
        grad_norm=np.stack([r.grad_norm for r in records]),
        layer_grad_norm={
            key: np.stack([r.layer_grads[key] for r in records]) for key in ("ffn_out", "block")
        },
        held_out_steps=np.asarray(train.eval_steps(), dtype=np.int64),
        held_out_loss=np.stack([r.held_out for r in records]),
        stats_steps=np.asarray(train.stats_steps(), dtype=np.int64),
        input_denominator={
            key: np.stack([r.input_denominator[key] for r in records]) for key in keys
        },
        diverged_at=[r.diverged_at for r in records],
        stream_var=np.stack([r.stream_var for r in records]),
        absmax={key: np.stack([r.absmax[key] for r in records]) for key in keys},
    )
    for fit, values in _stacked_maps(records, keys).items():
        setattr(run, f"map_{fit}", values)  # TrainRun.map_fit(fit) reads it
    return run


def _stacked_maps(records: list[_Record], keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """MAP_FITS -> the norm keys -> (seeds, len(MAP_AT), L); empty without --map."""
    if any(r.maps is None for r in records):
        return {}
    return {
        fit: {key: np.stack([r.maps[fit][key] for r in records if r.maps]) for key in keys}
        for fit in MAP_FITS
    }
