"""`lninspect.watch`: norm statistics of a training run, every N optimizer steps, to a log.

    with lninspect.watch(model, every=50, log_dir="runs/a") as w:
        for batch in batches:
            loss = model(batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            w.step(loss=loss)           # once per optimizer step

Steps count optimizer updates: the record of step s shows weights that s updates have made.
With `text=None` the record of step s comes from that step's own forward and backward (the
s-th call of `step()` ends it): the capture hooks are attached just after the previous
`step()` and removed at this one, so the steps in between run with no hook at all. While
attached, a gate on the model pauses the capture for any pass that is not a training pass
(the model in eval mode, or gradients off), so an evaluation in between is not mixed in.
With `text=...` the watcher runs that fixed probe (lninspect.monitor.probe) at the start and
after every N-th step instead.

Under torch.distributed (DDP, or FSDP2's `fully_shard`) every rank records its own tokens
on the same steps, and the records are combined over the ranks (lninspect.monitor.ranks;
parameter gradient norms: lninspect.monitor.params); rank 0 alone writes. With a probe,
rank 0 alone runs it (on the module inside DDP: no collective), as every rank would see
the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lninspect.errors import LninspectError
from lninspect.hooks.capture import Capture
from lninspect.hooks.fused import MODES
from lninspect.monitor.params import ParamGradNorms
from lninspect.monitor.probe import DEFAULT_PROBE_TOKENS, log_capture, probe_ids, run_probe
from lninspect.monitor.ranks import Combined, agree, combine, world
from lninspect.monitor.sinks import Sink, open_sinks
from lninspect.norms.discovery import NormInfo, find_norms
from lninspect.results import StatsResult
from lninspect.results.watch import ParamGroupGrad, WatchRecord
from lninspect.trends import watch_record

DEFAULT_LOG_DIR = Path("lninspect-watch")


class Watcher:
    """The state of one watched run: its norms, its sinks, and the hooks of a recording step."""

    def __init__(
        self,
        model: nn.Module,
        every: int,
        log_dir: str | Path | None,
        text: Any = None,
        *,
        norms: Sequence[NormInfo] | None = None,
        sinks: Sequence[Sink] = (),
        tokenizer: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        max_tokens: int = DEFAULT_PROBE_TOKENS,
        start_step: int = 0,
        resume: bool = False,
        tensorboard: bool | None = None,
        wandb: bool | None = None,
        data_parallel: bool = False,
        reductions: str = "auto",
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise LninspectError(f"every must be a positive number of steps, not {every!r}")
        if not isinstance(start_step, int) or isinstance(start_step, bool) or start_step < 0:
            raise LninspectError(f"start_step must be a whole number >= 0, not {start_step!r}")
        if reductions not in MODES:
            raise LninspectError(
                f"reductions must be one of {', '.join(MODES)}, not {reductions!r}"
            )
        self.model = unwrap(model)
        self.every = every
        self.reductions = reductions
        self.optimizer = optimizer
        self.step_index = start_step  # optimizer updates applied so far
        self.rank, self.world_size = world()
        self.active = self.rank == 0 or text is None  # a probe runs on rank 0 alone
        self.norms: list[NormInfo] = []
        if self.active:
            self.norms = list(norms) if norms is not None else find_norms(self.model)
        self.params = ParamGradNorms(self.model, self.norms)
        self.params.averaged = self.world_size > 1 and (
            isinstance(model, nn.parallel.DistributedDataParallel) or data_parallel
        )
        self.sinks: list[Sink] = []
        self.probe: torch.Tensor | None = None
        self._stack: ExitStack | None = None
        self._capture: Capture | None = None
        self._gate: list[RemovableHandle] = []
        self._losses: list[tuple[torch.Tensor, bool]] = []  # (loss, summed) per training pass
        self._pass_open = False  # a pass began and has not ended (it raised, if another begins)
        self._lr = math.nan
        # set by WatchCallback: the Trainer divides each rank's summed loss by the step's
        # tokens over all ranks, so the step's loss is the sum of the ranks' (not their mean)
        self.tokens_over_ranks = False
        try:
            self._open(text, tokenizer, max_tokens, log_dir, resume, tensorboard, wandb)
            self.sinks += list(sinks) if self.rank == 0 else []
        except BaseException:
            agree(False, self.world_size)  # the other ranks stop too, rather than wait
            raise
        if not agree(True, self.world_size):
            raise LninspectError(f"another rank could not start watching (log_dir '{log_dir}')")

    def _open(
        self,
        text: Any,
        tokenizer: Any,
        max_tokens: int,
        log_dir: str | Path | None,
        resume: bool,
        tensorboard: bool | None,
        wandb: bool | None,
    ) -> None:
        """Check the model and the probe, and open the sinks (on rank 0)."""
        if not self.active:
            return
        if not self.norms:
            raise LninspectError("the model has no normalization module to watch")
        if text is not None:
            if self.params.sharded:
                raise LninspectError("watch(text=...) does not run a probe under FSDP")
            self.probe = probe_ids(self.model, text, tokenizer, max_tokens)
        if self.rank == 0 and log_dir is not None:
            self.sinks = open_sinks(Path(log_dir), resume, tensorboard, wandb)

    @property
    def mode(self) -> str:
        return "train" if self.probe is None else "probe"

    def records(self, step: int) -> bool:
        """Whether step `step` (updates applied so far) is recorded."""
        return self.active and step % self.every == 0

    # The loop's side -------------------------------------------------------------------------

    def start(self) -> None:
        """At the start of the run: probe the weights, or arm the first recording step."""
        self.arm_next()

    def step(self, loss: float | torch.Tensor | None = None, lr: float | None = None) -> None:
        """End one optimizer step: write its record on recording steps, arm the next one.

        `loss` (a float or a tensor: read only on recording steps, so no sync otherwise)
        and `lr` default to the loss the model returned and the optimizer's learning rate.
        """
        if not self.active:
            self.step_index += 1
            return
        try:  # a step that raised (a loss that is not a number) still counts: later steps keep
            if self.probe is None and self.armed:  # their numbers
                self.finish(self.step_index, loss, lr)
        finally:
            self.step_index += 1
            self.arm_next()

    def arm_next(self) -> None:
        """Write the probe's record, or arm the capture, if the coming step records."""
        if self.probe is not None:
            if self.records(self.step_index):
                self.write_probe(self.step_index)
        elif self.records(self.step_index):
            self.arm()

    def close(self) -> None:
        """Remove every hook (a step left half-recorded is dropped) and close the sinks; for
        good: a `step()` after the block records nothing and arms nothing."""
        self.active = False
        self.disarm()
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    # Recording from the training step --------------------------------------------------------

    @property
    def armed(self) -> bool:
        return self._capture is not None

    def arm(self) -> None:
        """Attach the capture, the parameter hooks and the gate for one recording step."""
        if self.armed or not self.active:
            return
        self._losses, self._lr = [], math.nan
        self._attach_capture()
        self.params.attach()
        self._gate = [
            self.model.register_forward_pre_hook(self._on_pass, prepend=True, with_kwargs=True),
            self.model.register_forward_hook(self._after_pass, with_kwargs=True),
        ]

    def _attach_capture(self) -> None:
        stack = ExitStack()
        self._capture = stack.enter_context(
            log_capture(
                self.model,
                self.norms,
                self.reductions,
                eval_mode=False,
                skip_recompute=True,
                nonfinite=self.world_size > 1,  # only the combined record holds the counts
            )
        )
        self._capture.pause()  # until a training pass starts (the gate resumes it)
        self._stack = stack

    def restart(self) -> None:
        """Forget what the capture holds so far (not the losses): a new micro-batch begins."""
        if self._stack is not None:
            self._stack.close()
            self._attach_capture()

    def disarm(self) -> None:
        for handle in self._gate:
            handle.remove()
        self._gate = []
        self.params.detach()
        if self._stack is not None:
            self._stack.close()
        self._stack, self._capture = None, None

    def _on_pass(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Gate: record training passes only (train mode, gradients on)."""
        assert self._capture is not None
        raised = self._pass_open  # the last pass raised part-way: its partial statistics go
        if raised:
            self.restart()
        self._pass_open = True
        training = module.training and torch.is_grad_enabled()
        if training:
            self._capture.resume()
            if not self._losses and self.optimizer is not None:
                self._lr = float(self.optimizer.param_groups[0]["lr"])
        else:
            self._capture.pause()
        if raised:  # the new capture's own root hook joins from the next pass
            self._capture._hooks.count_pass(module, args, kwargs)

    def _after_pass(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        """Keep the loss a transformers model returned for a training pass."""
        self._pass_open = False
        if not (module.training and torch.is_grad_enabled()):
            return
        self.params.watch_output(output)
        loss = getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            # with num_items_in_batch (Trainer), the loss is summed over the step's tokens and
            # divided by all of them: the step's mean is the sum over its micro-batches
            self._losses.append((loss.detach(), kwargs.get("num_items_in_batch") is not None))

    def finish(
        self, step: int, loss: float | torch.Tensor | None = None, lr: float | None = None
    ) -> None:
        """Write the record of the armed step and remove every hook."""
        assert self._capture is not None
        try:
            self._capture.pause()
            result = self._capture.result() if self._capture.passes else None
            params = self.params.read()
            value = self._loss(loss)
        finally:
            self.disarm()
        lr = self._lr if lr is None else _number("lr", lr)
        if self.world_size > 1:
            summed = self.tokens_over_ranks and loss is None and self._summed()
            combined = combine(self.norms, result, value, sum_losses=summed)
            self.write_combined(combined, params, step, lr)
        elif result is None:
            self.warn_empty(step)
        else:
            self.write(result, params, step, value, lr)

    def warn_empty(self, step: int) -> None:
        warnings.warn(
            f"lninspect.watch: step {step} had no training pass through the model "
            "between step() calls; nothing recorded",
            stacklevel=4,
        )

    def write_combined(
        self, combined: Combined, params: list[ParamGroupGrad], step: int, lr: float
    ) -> None:
        """Write the record of a step combined over the ranks (from rank 0)."""
        if combined.tokens == 0:
            self.warn_empty(step)
            return
        record = WatchRecord(
            step=step,
            loss=combined.loss,
            lr=lr,
            norms=combined.norms,
            params=params,
            mode=self.mode,
            tokens=combined.tokens,
            world_size=self.world_size,
            grads=self.params.kind,
        )
        for sink in self.sinks:
            sink.write(record)

    def _loss(self, given: float | torch.Tensor | None) -> float:
        if torch.is_tensor(given):
            return float(given.detach().float().mean())
        if given is not None:
            return _number("loss", given)
        if not self._losses:
            return math.nan
        values = torch.stack([loss.float() for loss, _ in self._losses])
        return float(values.sum() if self._summed() else values.mean())

    def _summed(self) -> bool:
        return bool(self._losses) and all(flag for _, flag in self._losses)

    # Probe and writing -----------------------------------------------------------------------

    def write_probe(self, step: int) -> None:
        assert self.probe is not None
        result, loss, params = run_probe(
            self.model, self.norms, self.params, self.probe, self.reductions
        )
        self.write(result, params, step, loss, self.current_lr())

    def current_lr(self) -> float:
        if self.optimizer is None:
            return math.nan
        return float(self.optimizer.param_groups[0]["lr"])

    def write(
        self,
        result: StatsResult,
        params: list[ParamGroupGrad],
        step: int,
        loss: float,
        lr: float,
    ) -> WatchRecord:
        record = watch_record(result, params, step=step, loss=loss, lr=lr, mode=self.mode)
        for sink in self.sinks:
            sink.write(record)
        return record


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (its norms, and no collective in a probe)."""
    inner = getattr(model, "module", None)
    if isinstance(model, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module):
        return inner
    return model


@contextmanager
def watch(
    model: nn.Module,
    every: int = 100,
    log_dir: str | Path | None = DEFAULT_LOG_DIR,
    text: Any = None,
    **options: Any,
) -> Iterator[Watcher]:
    """Record norm statistics every `every` optimizer steps into `log_dir` (see the module).

    Options: `tokenizer` (for a probe `text` given as a string), `optimizer` (for the
    learning rate), `max_tokens` (of the probe, default 256), `start_step`, `resume` (append
    to an existing log), `tensorboard` / `wandb` (None: when installed / active; True:
    required; False: off), `data_parallel` (several processes: the gradients are averaged
    over the ranks before `step()`, as by DDP; a model wrapped in DDP says so itself),
    `reductions` (the per-token reductions, as `capture`'s: "auto", the default, compiles
    them into one pass per norm on CUDA and runs them eagerly elsewhere; "compiled" on the CPU
    costs a compile, once a process, and saves time on every recorded step after it),
    `norms` (the norms to record, from `find_norms(model, include=...)`; default: every norm
    discovery finds), `sinks` (more receivers of each record, objects with `write(record)`
    and `close()`, on rank 0). `log_dir=None` writes no file: the records go to `sinks` only.
    """
    watcher = Watcher(model, every, log_dir, text, **options)
    try:
        watcher.start()
        yield watcher
    finally:
        watcher.close()


def _number(name: str, value: object) -> float:
    """`value` of step(name=...) as a float, or one sentence naming it (the step still counts)."""
    if not isinstance(value, (str, bytes, bool)):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            pass
    shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
    raise LninspectError(
        f"step({name}={shown}): {name} must be a number or a tensor; the step was counted and "
        "not recorded"
    )
