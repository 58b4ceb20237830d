"""Run by tests/test_watch_distributed.py with 2 CPU processes (gloo).

Under `torchrun --nproc_per_node 2`: rank 0 first meets an existing log (every rank must
stop). Then each rank takes its half of one global batch and trains the reference GPT two
steps under `lninspect.watch` (every=1: records of steps 0 and 1), wrapped in DDP, then
sharded with FSDP2's `fully_shard`; the logs go to `<out>/ddp` and `<out>/fsdp`. The test
builds the same model and batch from the functions below and runs them in one process.

With `trainer` after `<out>`, under `accelerate launch` (which starts the processes and
leaves the process group to the Trainer): a transformers Trainer with `WatchCallback` takes
two steps; its log goes to `<out>/trainer/lninspect`, the Trainer's log history to
`<out>/trainer/history.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import lninspect
from lninspect.errors import LninspectError
from lninspect.placement.refgpt import GPT, RefGPTConfig
from lninspect.results.watch import LOG_NAME

SEQUENCES, TOKENS, STEPS = 4, 17, 2


def build_model() -> GPT:
    torch.manual_seed(0)
    return GPT(RefGPTConfig(vocab_size=64, context=32, layers=2, d_model=32, heads=2))


def global_batch() -> torch.Tensor:
    """(SEQUENCES, TOKENS) ids; rank r of w trains rows r::w (equal halves for 2 ranks)."""
    return torch.randint(0, 64, (SEQUENCES, TOKENS), generator=torch.Generator().manual_seed(1))


def train(model: nn.Module, ids: torch.Tensor, log_dir: Path, **options: object) -> None:
    """STEPS AdamW steps on `ids` with every step recorded."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with lninspect.watch(model, every=1, log_dir=log_dir, tensorboard=False, **options) as w:
        for _ in range(STEPS):
            logits = model(ids[:, :-1])  # (B, T-1, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            w.step(loss=loss)


def sharded(model: GPT) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    return fully_shard(model)


def weight_summaries(model: nn.Module) -> list[dict[str, float]]:
    """The weight summary of every norm, as `lninspect stats` describes it."""
    from dataclasses import asdict

    from lninspect.hooks.transfer import descriptions
    from lninspect.norms.discovery import find_norms

    return [asdict(d.weight) for d in descriptions(find_norms(model)) if d.weight is not None]


def trainer_run(out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    )
    ids = global_batch()
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=1,
        max_steps=STEPS,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    callback = lninspect.WatchCallback(every=1, tensorboard=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    if dist.get_rank() == 0:
        (out / "history.json").write_text(json.dumps(trainer.state.log_history))
    if dist.is_initialized():
        dist.barrier()  # both ranks leave together (see main)


def refused(out: Path, rank: int) -> None:
    """Rank 0 cannot open the log (it exists): every rank stops with an error, none waits."""
    folder = out / "taken"
    if rank == 0:
        folder.mkdir()
        (folder / LOG_NAME).write_text("")
    dist.barrier()
    try:
        with lninspect.watch(build_model(), log_dir=folder, tensorboard=False):
            message = "no error"
    except LninspectError as exc:
        message = str(exc)
    (out / f"refused-{rank}.txt").write_text(message)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    refused(out, rank)
    mine = global_batch()[rank::size]
    model = build_model()
    train(nn.parallel.DistributedDataParallel(model), mine, out / "ddp")
    fsdp = sharded(build_model())
    train(fsdp, mine, out / "fsdp")
    weights = weight_summaries(fsdp)  # a collective under FSDP2: on every rank
    if rank == 0:
        sharded_now = type(fsdp.ln_f.weight).__name__ == "DTensor"  # a shard on the module
        (out / "fsdp" / "weights.json").write_text(json.dumps([sharded_now, weights]))
    # every rank tears gloo down together: a rank that exits while the other still holds
    # its connections made that one abort at exit ("terminate called without an active
    # exception", SIGABRT after every output was written; once in a loaded CI run)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[2:] == ["trainer"]:
        trainer_run(Path(sys.argv[1]) / "trainer")
    else:
        main(Path(sys.argv[1]))
