"""Refuse a model that is not a causal language model, before anything runs on the text.

AutoModelForCausalLM loads more than GPT-style models: a BERT folder becomes
BertLMHeadModel, whose attention sees the whole sequence in both directions, so that its
next-token loss and its statistics mean nothing. The test is what causality means: change the
last token of a short probe and see whether the logits of the earlier positions move.
Architectures lninspect is tested on (lninspect.norms.discovery.KNOWN_ARCHITECTURES) skip it.
"""

from __future__ import annotations

import torch
from torch import nn

from lninspect.errors import LninspectError
from lninspect.norms.dataflow import one_thread
from lninspect.norms.discovery import KNOWN_ARCHITECTURES

PROBE_TOKENS = 6
TOLERANCE = 1e-6  # change of earlier logits, relative to their size, beyond run-to-run noise
NOISE_FACTOR = 10  # a change must exceed this many times the difference of two equal runs


def check_causal(model: nn.Module, name: str, device: torch.device) -> None:
    """LninspectError (exit 2) naming the class when later tokens change earlier outputs."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in KNOWN_ARCHITECTURES:
        return
    if getattr(config, "is_encoder_decoder", False):
        raise _not_causal(model, name, "an encoder-decoder model")
    moved = _later_tokens_move_earlier_logits(model, device)
    if moved:
        raise _not_causal(model, name, "its outputs at a token depend on the tokens after it")


def _later_tokens_move_earlier_logits(model: nn.Module, device: torch.device) -> bool:
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    vocab = getattr(embeddings, "num_embeddings", None) or getattr(
        getattr(model, "config", None), "vocab_size", None
    )
    if not isinstance(vocab, int) or vocab < 3:
        return False
    ids = (torch.arange(PROBE_TOKENS, device=device) % vocab)[None]  # (1, T)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % vocab
    with torch.no_grad(), one_thread():
        try:
            first, again, other = (
                model(input_ids=i, use_cache=False).logits.float()[:, :-1]
                for i in (ids, ids, changed)
            )
        except (TypeError, AttributeError, RuntimeError):  # a model that runs otherwise
            return False
    # Causal: rows before the last see the same tokens, so they are equal up to the noise of
    # the device (none on a CPU; nondeterministic kernels on a GPU), measured by a rerun.
    noise = (first - again).abs().max().item()
    moved = (first - other).abs().max().item()
    return moved > NOISE_FACTOR * noise + TOLERANCE * max(1.0, first.abs().max().item())


def _not_causal(model: nn.Module, name: str, why: str) -> LninspectError:
    return LninspectError(
        f"model '{name}' ({type(model).__name__}) is not a causal language model: {why}, so "
        "next-token statistics would mean nothing; lninspect inspects GPT-style causal LMs"
    )
