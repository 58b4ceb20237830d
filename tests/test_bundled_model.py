"""The bundled tiny GPT-2 (lninspect/bundled/tiny) loads offline and is really trained."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel  # noqa: E402

import lninspect  # noqa: E402

BUNDLED = Path(lninspect.__file__).resolve().parent / "bundled" / "tiny"
MAX_TOTAL_BYTES = 8_000_000  # issue 8: all files together at most 8 MB


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(BUNDLED).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(BUNDLED)


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((BUNDLED / "training_metrics.json").read_text())


def test_standard_files_present() -> None:
    names = {p.name for p in BUNDLED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names


def test_total_size_within_limit() -> None:
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total <= MAX_TOTAL_BYTES, f"bundled model is {total} bytes"


def test_gpt2_shape(model: GPT2LMHeadModel) -> None:
    cfg = model.config
    assert cfg.model_type == "gpt2"
    assert cfg.n_layer == 12 and len(model.transformer.h) == 12
    assert cfg.n_positions == 1024
    assert model.transformer.wpe.weight.shape == (1024, cfg.n_embd)
    assert cfg.n_embd % cfg.n_head == 0
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert model.dtype == torch.float32


def test_auto_model_loads_offline() -> None:
    auto = AutoModelForCausalLM.from_pretrained(BUNDLED)
    assert isinstance(auto, GPT2LMHeadModel)


@pytest.mark.parametrize(
    "text",
    [
        "The list.append(x) method adds an item to the end of the list.",
        "def f(a, b=2):\n    return {'k': [a, b]}  # café, naïve – “quotes” ✓\n",
        "  leading spaces\tand tabs\n\n<|endoftext|>",
    ],
)
def test_tokenizer_round_trip(tokenizer, text: str) -> None:
    assert tokenizer.is_fast
    ids = tokenizer(text)["input_ids"]
    assert max(ids) < tokenizer.vocab_size + len(tokenizer.added_tokens_encoder)
    assert tokenizer.decode(ids) == text


def test_special_token(tokenizer, model: GPT2LMHeadModel) -> None:
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.eos_token == "<|endoftext|>"
    assert model.config.eos_token_id == eot
    assert len(tokenizer) == model.config.vocab_size


def test_beats_unigram_baseline(model: GPT2LMHeadModel, tokenizer, metrics: dict) -> None:
    unigram = metrics["baselines"]["unigram_val_loss"]
    assert metrics["final_val_loss"] < unigram - 1.0
    ids = tokenizer(metrics["val_sentence"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert loss < unigram, f"loss {loss:.3f} on a validation sentence vs unigram {unigram:.3f}"


def test_shipped_training_text_is_the_one_tiny_was_trained_on():
    import json

    from lninspect.model.sources import BUNDLED_DIR
    from lninspect.model.text import training_documents

    documents = training_documents()
    metrics = json.loads((BUNDLED_DIR / "tiny" / "training_metrics.json").read_text())["data"]
    assert len(documents) == metrics["n_topic_docs"] + metrics["n_docstring_docs"]
    assert sum(map(len, documents)) == metrics["topic_chars"] + metrics["docstring_chars"]
