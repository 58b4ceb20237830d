"""`WatchCallback`: `lninspect.watch` in a transformers Trainer, turned on with one line.

    trainer = Trainer(model, args, ..., callbacks=[WatchCallback(every=50)])

Without a probe text it records from the training step itself, on the last micro-batch of
an accumulated step: the capture is attached at `on_step_begin` and started afresh at every
`on_substep_end`, so what remains at `on_step_end` is the last micro-batch (the parameter
gradient norms are those of the whole accumulated gradient, taken as the last micro-batch's
backward adds to it). Under gradient checkpointing each norm counts once per pass (the
capture's `skip_recompute`). The loss is the step's, over all its micro-batches, as the
model returned it. Under torchrun / accelerate launch every rank records and rank 0 writes
the records combined over all ranks (lninspect.monitor.watcher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lninspect.monitor.watcher import Watcher

LOG_SUBDIR = "lninspect"  # the default log_dir inside the Trainer's output_dir


class WatchCallback(TrainerCallback):
    """Record norm statistics every `every` optimizer steps (see lninspect.monitor.watcher).

    `log_dir` defaults to `<output_dir>/lninspect`. A run resumed from a checkpoint appends
    to the log; a new run refuses an existing log unless `resume=True`. Other options go to
    `lninspect.watch` (text, max_tokens, tensorboard, wandb); a probe text given as a string
    is tokenized with the Trainer's processing class.
    """

    def __init__(
        self, every: int = 100, log_dir: str | Path | None = None, text: Any = None, **options: Any
    ) -> None:
        self.every = every
        self.log_dir = log_dir
        self.text = text
        self.options = options
        self.watcher: Watcher | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        processing_class: Any = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        options = {
            "tokenizer": processing_class,
            "resume": state.global_step > 0,
            **self.options,
            "start_step": state.global_step,
            "optimizer": optimizer,
            "data_parallel": args.parallel_mode.value == "distributed",  # DDP averages grads
        }
        log_dir = self.log_dir or Path(args.output_dir or ".") / LOG_SUBDIR
        self.watcher = Watcher(model, self.every, log_dir, self.text, **options)
        self.watcher.tokens_over_ranks = bool(getattr(args, "average_tokens_across_devices", 0))
        if self.watcher.probe is not None:
            self.watcher.start()

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        watcher = self.watcher
        if watcher is not None and watcher.probe is None and watcher.records(state.global_step):
            watcher.optimizer = kwargs.get("optimizer", watcher.optimizer)
            watcher.arm()

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.watcher is not None and self.watcher.armed:
            self.watcher.restart()  # keep the last micro-batch only

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        watcher = self.watcher
        if watcher is None:
            return
        if watcher.armed:
            watcher.finish(state.global_step - 1)
        elif watcher.probe is not None and watcher.records(state.global_step):
            watcher.write_probe(state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
