#!/usr/bin/env python
"""Train the tiny GPT-2 bundled with lninspect (``lninspect/bundled/tiny``).

The model has gpt2's depth (12 layers) and context (1024 positions) but a narrow
width and a small vocabulary, so that all its files fit in a few megabytes and its
normalization statistics have the same 12 x 1024 shape as gpt2's.

Data: the training text shipped in the package, lninspect/bundled/text/python-docs.txt
(its README says where it comes from: CPython's reference-manual topics and the docstrings
of 199 standard-library modules, PSF licence, drawn once from CPython 3.11.7 and frozen).
Every 20th document is held out for validation. Everything is seeded and the data order is
deterministic; the text no longer depends on the running Python.

Reproduce the bundled model (about 25-30 minutes on 2 idle CPU cores)::

    .venv/bin/python scripts/train_tiny.py --out lninspect/bundled/tiny

A quick end-to-end smoke run::

    .venv/bin/python scripts/train_tiny.py --out /tmp/tiny --steps 20 --eval-every 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from lninspect.model.text import training_documents  # noqa: E402

EOT = "<|endoftext|>"
VAL_EVERY = 20  # every 20th document (index % 20 == 19) goes to validation
TOPIC_DOCS = 79  # the text's first documents are pydoc topics, the rest module docstrings
SAMPLE_PROMPTS = ("The list", "A function", "def ")


@dataclass
class Hyper:
    """Architecture and training hyper-parameters (defaults = the bundled model)."""

    vocab_size: int = 3072
    n_embd: int = 96
    n_head: int = 4
    n_layer: int = 12
    n_positions: int = 1024
    dropout: float = 0.1  # residual and embedding dropout
    steps: int = 1500
    tokens_per_step: int = 4096
    lr: float = 5e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 80
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Sequence-length curriculum: (fraction of steps at which it starts, length).
    seq_schedule: tuple[tuple[float, int], ...] = ((0.0, 256), (0.15, 512), (0.3, 1024))


# --------------------------------------------------------------------------- data


def build_corpus() -> tuple[list[str], list[str], dict]:
    """The shipped training text's documents, split; return (train_docs, val_docs, stats)."""
    docs = training_documents()
    topics, docstrings = docs[:TOPIC_DOCS], docs[TOPIC_DOCS:]
    train = [d for i, d in enumerate(docs) if i % VAL_EVERY != VAL_EVERY - 1]
    val = [d for i, d in enumerate(docs) if i % VAL_EVERY == VAL_EVERY - 1]
    stats = {
        "text": "lninspect/bundled/text/python-docs.txt",
        "n_topic_docs": len(topics),
        "topic_chars": sum(map(len, topics)),
        "n_docstring_docs": len(docstrings),
        "docstring_chars": sum(map(len, docstrings)),
        "n_train_docs": len(train),
        "n_val_docs": len(val),
        "train_chars": sum(map(len, train)),
        "val_chars": sum(map(len, val)),
    }
    return train, val, stats


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(train_docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a GPT-2 style byte-level BPE tokenizer with a single ``<|endoftext|>`` token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_docs, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, model_max_length=1024
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Save the tokenizer; name the generic fast class so transformers 4.x loads it too."""
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def encode_docs(tokenizer: PreTrainedTokenizerFast, docs: list[str]) -> torch.Tensor:
    """Concatenate documents into one token stream, each followed by ``<|endoftext|>``."""
    eot = tokenizer.convert_tokens_to_ids(EOT)
    ids: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------- baselines


def eval_targets(stream: torch.Tensor, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(previous, target) token pairs the model is scored on: all but each chunk's first."""
    prev, tgt = [], []
    for start in range(0, len(stream) - 1, seq_len):
        chunk = stream[start : start + seq_len].numpy()
        prev.append(chunk[:-1])
        tgt.append(chunk[1:])
    return np.concatenate(prev), np.concatenate(tgt)


def unigram_probs(train: torch.Tensor, vocab_size: int) -> np.ndarray:
    """Add-one smoothed unigram distribution fitted on the training tokens."""
    counts = np.bincount(train.numpy(), minlength=vocab_size).astype(np.float64) + 1.0
    return counts / counts.sum()


def bigram_nll(train: torch.Tensor, prev: np.ndarray, tgt: np.ndarray, uni: np.ndarray) -> dict:
    """Bigram model interpolated with the unigram one; lambda picked on the evaluated tokens."""
    v = len(uni)
    t = train.numpy().astype(np.int64)
    pair_keys, pair_counts = np.unique(t[:-1] * v + t[1:], return_counts=True)
    ctx_counts = np.bincount(t[:-1], minlength=v).astype(np.float64)
    keys = prev.astype(np.int64) * v + tgt
    pos = np.clip(np.searchsorted(pair_keys, keys), 0, len(pair_keys) - 1)
    found = pair_keys[pos] == keys
    p_bi = np.where(found, pair_counts[pos], 0) / np.maximum(ctx_counts[prev], 1.0)
    best = {"nll": math.inf, "lambda": None}
    for lam in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        nll = float(-np.log(lam * p_bi + (1 - lam) * uni[tgt]).mean())
        if nll < best["nll"]:
            best = {"nll": nll, "lambda": lam}
    return best


def baselines(train: torch.Tensor, val: torch.Tensor, vocab_size: int, seq_len: int) -> dict:
    """Unigram and bigram cross-entropies (nats/token) on the validation targets."""
    prev, tgt = eval_targets(val, seq_len)
    uni = unigram_probs(train, vocab_size)
    bi = bigram_nll(train, prev, tgt, uni)
    return {
        "unigram_val_loss": float(-np.log(uni[tgt]).mean()),
        "bigram_val_loss": bi["nll"],
        "bigram_lambda": bi["lambda"],
        "n_val_targets": int(len(tgt)),
    }


# -------------------------------------------------------------------------- model


def build_model(hp: Hyper, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (tied embeddings) with the given shape."""
    assert hp.n_embd % hp.n_head == 0, "heads must divide the width"
    eot = tokenizer.convert_tokens_to_ids(EOT)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=hp.n_positions,
        n_embd=hp.n_embd,
        n_layer=hp.n_layer,
        n_head=hp.n_head,
        resid_pdrop=hp.dropout,
        embd_pdrop=hp.dropout,
        attn_pdrop=0.0,  # attention dropout would push SDPA off its fast CPU kernel (5x slower)
        bos_token_id=eot,
        eos_token_id=eot,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def make_optimizer(model: torch.nn.Module, hp: Hyper) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (incl. embeddings), none on biases and LayerNorms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hp.lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, hp: Hyper) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_frac * lr``."""
    if step < hp.warmup_steps:
        return hp.lr * (step + 1) / hp.warmup_steps
    progress = (step - hp.warmup_steps) / max(1, hp.steps - hp.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return hp.lr * (hp.min_lr_frac + (1.0 - hp.min_lr_frac) * cosine)


def seq_len_at(step: int, hp: Hyper) -> int:
    """Sequence length of the curriculum at ``step``."""
    length = hp.seq_schedule[0][1]
    for start_frac, seq_len in hp.seq_schedule:
        if step >= start_frac * hp.steps:
            length = seq_len
    return length


def sample_batch(
    stream: torch.Tensor, seq_len: int, batch: int, gen: torch.Generator
) -> torch.Tensor:
    """``batch`` random windows of ``seq_len`` tokens, drawn with a seeded generator."""
    starts = torch.randint(0, len(stream) - seq_len, (batch,), generator=gen)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def evaluate(
    model: GPT2LMHeadModel, stream: torch.Tensor, seq_len: int, max_chunks: int | None = None
) -> float:
    """Mean next-token cross-entropy (nats) over consecutive chunks of the stream."""
    model.eval()
    total, count = 0.0, 0
    starts = list(range(0, len(stream) - 1, seq_len))[:max_chunks]
    for start in starts:
        chunk = stream[start : start + seq_len].unsqueeze(0)
        logits = model(input_ids=chunk).logits[0, :-1].float()
        total += torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum").item()
        count += chunk.shape[1] - 1
    model.train()
    return total / count


# ----------------------------------------------------------------------- training


def train_loop(model, train_ids, val_ids, hp: Hyper, args) -> dict:
    """Run the optimisation; print progress; return a log of losses and timings."""
    opt = make_optimizer(model, hp)
    gen = torch.Generator().manual_seed(args.seed)
    history, t0, cpu0, step = [], time.time(), time.process_time(), 0
    model.train()
    for step in range(hp.steps):
        seq_len = seq_len_at(step, hp)
        batch = sample_batch(train_ids, seq_len, hp.tokens_per_step // seq_len, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, hp)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.time() - t0
        entry = {"step": step + 1, "seq_len": seq_len, "loss": loss.item(), "lr": lr_at(step, hp)}
        if (step + 1) % args.eval_every == 0 or step + 1 == hp.steps:
            entry["val_loss_subset"] = evaluate(model, val_ids, hp.n_positions, args.eval_chunks)
        if (step + 1) % args.log_every == 0 or "val_loss_subset" in entry or step == 0:
            print_progress(entry, grad_norm, elapsed, (step + 1) * hp.tokens_per_step)
            history.append(entry)
        if args.max_minutes is not None and elapsed > args.max_minutes * 60:
            print(f"time budget of {args.max_minutes} min reached; stopping at step {step + 1}")
            break
    cpu = time.process_time() - cpu0
    return {
        "history": history,
        "steps_done": step + 1,
        "train_seconds": time.time() - t0,
        "cpu_seconds": cpu,
    }


def print_progress(entry: dict, grad_norm: float, elapsed: float, tokens: int) -> None:
    """One progress line."""
    val = f" val {entry['val_loss_subset']:.3f}" if "val_loss_subset" in entry else ""
    print(
        f"step {entry['step']:5d} T={entry['seq_len']:4d} loss {entry['loss']:.3f}{val} "
        f"lr {entry['lr']:.2e} gnorm {grad_norm:.2f} | {elapsed / 60:5.1f} min, "
        f"{tokens / max(elapsed, 1e-9):.0f} tok/s",
        flush=True,
    )


# ---------------------------------------------------------------------- reporting


@torch.no_grad()
def generate_samples(
    model: GPT2LMHeadModel, tokenizer, seed: int, new_tokens: int = 48
) -> list[dict]:
    """Greedy and seeded top-k samples for the fixed prompts."""
    model.eval()
    out = []
    for prompt in SAMPLE_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        greedy = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        torch.manual_seed(seed)
        sampled = model.generate(
            ids,
            max_new_tokens=new_tokens,
            do_sample=True,
            top_k=40,
            temperature=0.8,
            pad_token_id=0,
        )
        out.append(
            {
                "prompt": prompt,
                "greedy": tokenizer.decode(greedy[0], skip_special_tokens=False),
                "sampled": tokenizer.decode(sampled[0], skip_special_tokens=False),
            }
        )
    return out


def pick_val_sentence(val_docs: list[str]) -> str:
    """A short English passage from the validation split, for the package's tests."""
    for doc in val_docs:
        for para in doc.split("\n\n"):
            text = " ".join(para.split())
            prose = text[0].isupper() and text.endswith(".") and "(" not in text
            if prose and 150 <= len(text) <= 400:
                return text
    return " ".join(val_docs[0].split())[:300]


def file_sizes(out: Path) -> dict:
    """Byte size of each file in the output directory, and the total."""
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    sizes["total"] = sum(sizes.values())
    return sizes


def write_metrics(metrics: dict, path: Path, out: Path) -> None:
    """Write the metrics JSON; its ``file_sizes`` include the JSON itself (hence the loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    for _ in range(3):  # the JSON's own size settles after a pass or two
        metrics["file_sizes"] = file_sizes(out)
        path.write_text(json.dumps(metrics, indent=1) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("lninspect/bundled/tiny"), help="output dir")
    p.add_argument("--steps", type=int, default=Hyper.steps, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-minutes", type=float, default=None, help="optional wall-clock budget (stop early)"
    )
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation checks")
    p.add_argument("--eval-chunks", type=int, default=32, help="1024-token chunks per check")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--metrics", type=Path, default=None, help="JSON file (default OUT/training_metrics.json)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build data and tokenizer, train, evaluate, and save the model directory."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hp = Hyper(steps=args.steps)
    t_start = time.time()

    train_docs, val_docs, data_stats = build_corpus()
    print(f"corpus: {json.dumps(data_stats)}", flush=True)
    tokenizer = train_tokenizer(train_docs, hp.vocab_size)
    train_ids, val_ids = encode_docs(tokenizer, train_docs), encode_docs(tokenizer, val_docs)
    data_stats.update(
        train_tokens=len(train_ids), val_tokens=len(val_ids), vocab_size=len(tokenizer)
    )
    base = baselines(train_ids, val_ids, len(tokenizer), hp.n_positions)
    print(f"tokens: train {len(train_ids)}, val {len(val_ids)}", flush=True)
    print(f"baselines (nats/token): {json.dumps(base)}", flush=True)

    torch.manual_seed(args.seed)
    model = build_model(hp, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)
    log = train_loop(model, train_ids, val_ids, hp, args)
    val_loss = evaluate(model, val_ids, hp.n_positions)
    unigram = base["unigram_val_loss"]
    print(f"final val loss {val_loss:.4f} nats/token (unigram {unigram:.4f})", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out)
    metrics = {
        "hyper": asdict(hp),
        "seed": args.seed,
        "data": data_stats,
        "baselines": base,
        "final_val_loss": val_loss,
        "final_train_loss_last": log["history"][-1]["loss"],
        "n_params": n_params,
        "steps_done": log["steps_done"],
        "train_minutes": log["train_seconds"] / 60,
        "train_cpu_minutes": log["cpu_seconds"] / 60,
        "total_minutes": (time.time() - t_start) / 60,
        "machine": {
            "cpu_threads": args.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "val_sentence": pick_val_sentence(val_docs),
        "samples": generate_samples(model, tokenizer, args.seed),
        "history": log["history"],
    }
    write_metrics(metrics, args.metrics or args.out / "training_metrics.json", args.out)
    print(f"saved to {args.out}: {json.dumps(metrics['file_sizes'])}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
