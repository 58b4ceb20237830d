"""The tokens `lninspect placement --train` trains on: a text, the bundled tokenizer, a split.

The text is the one shipped in the package (lninspect/bundled/text/python-docs.txt, what the
bundled model `tiny` was trained on) or a `--file`. It is cut into documents at the
`<|endoftext|>` separator lines, tokenized with the bundled model's byte-level BPE (3,072
tokens), and each document is followed by `<|endoftext|>`. The held-out part is the same as
tiny's: every 20th document (index % 20 == 19); a text of fewer than 20 documents keeps the
last 1/20 of its tokens instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from lninspect.errors import LninspectError
from lninspect.model.sources import BUNDLED_DIR
from lninspect.model.text import DOCUMENT_SEPARATOR, TRAINING_TEXT, read_text

EOT = "<|endoftext|>"
HELD_OUT_EVERY = 20  # every 20th document is held out, as in scripts/train_tiny.py
TOKENIZER = BUNDLED_DIR / "tiny" / "tokenizer.json"


@dataclass(frozen=True)
class Tokens:
    """A text as two token streams: what the model trains on and what it is scored on."""

    source: str  # the text's file, as the user named it (or the shipped file's name)
    train: torch.Tensor  # (train_tokens,) int64
    held_out: torch.Tensor  # (held_out_tokens,) int64
    vocab_size: int  # the tokenizer's, special token included
    documents: int


def load_tokens(file: Path | None = None, encoding: str = "utf-8") -> Tokens:
    """The shipped training text (or `file`) tokenized and split into train / held out."""
    path = file or TRAINING_TEXT
    text = read_text(None, path, encoding).text
    documents = [d.strip() for d in text.split(DOCUMENT_SEPARATOR) if d.strip()]
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise LninspectError(f"the bundled tokenizer has no {EOT} token: reinstall lninspect")
    encoded = [e.ids + [eot] for e in tokenizer.encode_batch(documents, add_special_tokens=False)]
    if len(documents) >= HELD_OUT_EVERY:
        train = [ids for i, ids in enumerate(encoded) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
        held = [ids for i, ids in enumerate(encoded) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
        train_ids, held_ids = _concat(train), _concat(held)
    else:
        stream = _concat(encoded)
        cut = len(stream) - len(stream) // HELD_OUT_EVERY
        train_ids, held_ids = stream[:cut], stream[cut:]
    name = TRAINING_TEXT.name if file is None else str(file)
    return Tokens(name, train_ids, held_ids, tokenizer.get_vocab_size(), len(documents))


def _concat(documents: list[list[int]]) -> torch.Tensor:
    return torch.tensor([i for ids in documents for i in ids], dtype=torch.long)


def check_length(tokens: Tokens, seq_len: int) -> None:
    """Refuse a text too short for one training and one held-out window of `seq_len` + 1."""
    shortest = min(len(tokens.train), len(tokens.held_out))
    if shortest < seq_len + 2:
        raise LninspectError(
            f"'{tokens.source}' gives {len(tokens.train)} training and {len(tokens.held_out)} "
            f"held-out tokens: each part needs more than {seq_len + 1} (seq_len= + 1); "
            "give a longer text or a shorter seq_len="
        )


def sample_batch(
    stream: torch.Tensor, batch: int, seq_len: int, generator: torch.Generator
) -> torch.Tensor:
    """`batch` random windows of `seq_len` + 1 tokens (inputs and next-token targets)."""
    starts = torch.randint(len(stream) - seq_len, (batch,), generator=generator)
    return torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])


def held_out_windows(stream: torch.Tensor, count: int, seq_len: int) -> torch.Tensor:
    """`count` windows of `seq_len` + 1 tokens spread evenly over the held-out stream."""
    last = len(stream) - seq_len - 1
    starts = np.unique(np.linspace(0, last, num=count).round().astype(int))
    return torch.stack([stream[s : s + seq_len + 1] for s in starts])  # (<= count, seq_len + 1)


def unigram_loss(tokens: Tokens) -> float:
    """Cross-entropy of the held-out tokens under the training tokens' frequencies (add-one):
    what a model that learned only how often each token occurs would score."""
    counts = np.bincount(tokens.train.numpy(), minlength=tokens.vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[tokens.held_out[1:].numpy()].mean())
