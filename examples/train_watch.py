"""Train the reference GPT on the text shipped in lninspect, with `lninspect.watch` on.

    .venv/bin/python examples/train_watch.py                       # 300 steps, ~3 min, 2 cores
    .venv/bin/lninspect run runs/watch-example --plot --out runs/watch-example/figures

A pre-LN GPT (lninspect/placement/refgpt.py: 6 layers, width 96, GPT-2's initialization)
learns next-token prediction on the Python documentation bundled with lninspect
(lninspect/bundled/text), tokenized by the bundled model's tokenizer. Every `--every` steps
the watcher records, from that training step's own forward and backward, every norm's input
std, output std, gradient scale and largest |x|, and the gradient norm of every parameter
group, into `runs/watch-example/lninspect-watch.jsonl`. `--probe` records a fixed piece of
held-out text instead (one extra forward and backward per recorded step).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

import lninspect
from lninspect.model.sources import BUNDLED_DIR
from lninspect.model.text import training_documents
from lninspect.placement.experiment import initialize
from lninspect.placement.refgpt import GPT, RefGPTConfig


def token_stream(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled text as one stream of token ids, documents joined by the end-of-text id;
    the last 2 % is held out (the probe comes from there)."""
    ids: list[int] = []
    for document in training_documents():
        ids += tokenizer(document)["input_ids"] + [tokenizer.eos_token_id]
    stream = torch.tensor(ids, dtype=torch.long)
    cut = int(len(stream) * 0.98)
    return stream[:cut], stream[cut:]


def batches(stream: torch.Tensor, batch: int, length: int, seed: int):
    """Endless random windows of `length` + 1 tokens."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(stream) - length - 1, (batch,), generator=generator)
        yield torch.stack([stream[s : s + length + 1] for s in starts.tolist()])


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="record every N optimizer steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--probe", action="store_true", help="record a fixed held-out probe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=Path("runs/watch-example"))
    parser.add_argument("--resume", action="store_true", help="append to an existing log")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_DIR / "tiny")
    tokenizer.model_max_length = 1 << 30  # documents are cut into windows below, not here
    train, held_out = token_stream(tokenizer)
    config = RefGPTConfig(
        vocab_size=len(tokenizer),
        context=args.seq_len + 1,
        layers=args.layers,
        d_model=args.d_model,
        heads=4,
        mlp_ratio=4,
    )
    model = GPT(config)
    initialize(model, "gpt2", torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    probe = held_out[: args.seq_len + 1] if args.probe else None
    print(
        f"reference GPT: {args.layers} layers, width {args.d_model}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
        f"{len(train):,} training tokens; {args.steps} steps of {args.batch} x {args.seq_len}"
    )
    start = time.perf_counter()
    data = batches(train, args.batch, args.seq_len, args.seed)
    with lninspect.watch(
        model,
        every=args.every,
        log_dir=args.log_dir,
        text=probe,
        optimizer=optimizer,
        resume=args.resume,
    ) as watcher:
        for step in range(args.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args.lr, args.warmup, args.steps)
            loss = model.loss(next(data))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            watcher.step(loss=loss)  # read (a host sync) on recording steps only
            if step % 50 == 0 or step == args.steps - 1:
                elapsed = time.perf_counter() - start
                print(f"step {step:4d}  loss {loss.item():.3f}  {elapsed:6.1f} s")
    print(f"log: {args.log_dir / 'lninspect-watch.jsonl'}")


if __name__ == "__main__":
    main()
