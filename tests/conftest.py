"""Shared fixtures: tiny GPT-2 models built from a config, saved and loaded back offline."""

from __future__ import annotations

import os
from pathlib import Path

# Set, not defaulted: a shell's exported COLUMNS (empty, or 80) or FORCE_COLOR must not reach
# the tests' consoles. A test that wants another width passes COLUMNS itself.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COLUMNS"] = "200"
for name in ("LINES", "FORCE_COLOR"):
    os.environ.pop(name, None)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

# transformers makes its own stderr handler the first time its logging is used, bound to the
# sys.stderr of that moment: made here, on the real one, not inside a CliRunner whose
# captured stream closes when that test ends (a later record would then fail to write).
hf_logging.get_verbosity()

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Layer normalization keeps every token at a steady scale.",
    "A language model predicts the next token from the ones before it.",
] * 4


def build_tokenizer(vocab_size: int = 280):
    """A small byte-level BPE tokenizer, as transformers loads it from disk."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS, vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def tiny_gpt2(
    n_layer: int = 2, n_embd: int = 32, n_positions: int = 64, seed: int = 0, vocab_size: int = 300
):
    """A randomly initialised GPT2LMHeadModel small enough for unit tests."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=4,
        n_positions=n_positions,
        vocab_size=vocab_size,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial norm weights, so the affine step is really tested
        for name, param in model.named_parameters():
            if ".ln_" in name:
                param.add_(0.3 * torch.randn_like(param))
    return model


def words(text: str) -> str:
    """`text` with every run of white space made one space: what a phrase reads as whatever the
    console's width (Rich wraps at spaces; only a word longer than a line, a path, is folded)."""
    return " ".join(text.split())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with its tokenizer, saved with save_pretrained (what --model DIR loads)."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = build_tokenizer()
    model = tiny_gpt2(vocab_size=len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model():
    return tiny_gpt2()
