"""The fixed probe of `watch(text=...)`: one extra forward and backward on the same tokens at
every recorded step, in eval mode (no dropout), so that the numbers compare across steps.

The probe's gradients come from `torch.autograd.grad`, never into `.grad`: the training
step's gradients (and DDP's gradient hooks, which sit on `.grad` accumulation) are left
alone. They cost, for a moment, as much memory as the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lninspect.errors import LninspectError
from lninspect.hooks.capture import Capture, capture
from lninspect.monitor.params import ParamGradNorms
from lninspect.norms.discovery import NormInfo
from lninspect.results import StatsResult
from lninspect.results.watch import ParamGroupGrad

DEFAULT_PROBE_TOKENS = 256
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "context")


def probe_ids(
    model: nn.Module, text: Any, tokenizer: Any | None, max_tokens: int = DEFAULT_PROBE_TOKENS
) -> torch.Tensor:
    """(1, tokens) ids of the probe: `text` as a string (needs `tokenizer`) or as token ids."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 2:
        raise LninspectError(f"max_tokens must be a whole number >= 2, not {max_tokens!r}")
    if isinstance(text, str):
        if tokenizer is None:
            raise LninspectError("watch(text='...') needs tokenizer= (or give token ids as text)")
        ids = list(tokenizer(text)["input_ids"])
    else:
        ids = torch.as_tensor(text).reshape(-1).tolist()
    context = _context(model)
    limit = min(max_tokens, context) if context else max_tokens
    ids = ids[:limit]
    vocab = _vocabulary(model)
    if vocab is not None and any(not 0 <= i < vocab for i in ids):
        raise LninspectError(f"the probe holds token ids outside the vocabulary (0..{vocab - 1})")
    if len(ids) < 2:
        raise LninspectError(f"the probe text is {len(ids)} token(s): the loss needs at least 2")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.tensor([ids], dtype=torch.long, device=device)


def _vocabulary(model: nn.Module) -> int | None:
    """Rows of the input embedding (the model's own, or its first nn.Embedding)."""
    get = getattr(model, "get_input_embeddings", None)
    found = get() if callable(get) else None
    found = found or next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    rows = getattr(found, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def _context(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attribute in CONTEXT_ATTRIBUTES:
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits for `ids`: `.logits` of a transformers output, or the tensor itself."""
    out = model(ids)
    logits = getattr(out, "logits", out)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise LninspectError("the probe needs a model whose output is (or has) logits (B, T, V)")
    return logits


def log_capture(
    model: nn.Module, norms: Sequence[NormInfo], reductions: str, **options: Any
) -> AbstractContextManager[Capture]:
    """`capture` with gradients, for a watch log: without what the log does not hold (the
    residual-stream gradient and absmax_dim beyond each norm's peak, each a pass saved; the
    weight summaries, under FSDP2 a gather per norm)."""
    return capture(
        model,
        norms,
        grads=True,
        reductions=reductions,
        residual=False,
        token_dims=False,
        weights=False,
        **options,
    )


def run_probe(
    model: nn.Module,
    norms: Sequence[NormInfo],
    params: ParamGradNorms,
    ids: torch.Tensor,
    reductions: str = "auto",
) -> tuple[StatsResult, float, list[ParamGroupGrad]]:
    """Statistics, mean next-token loss and parameter gradient norms of the probe."""
    with torch.enable_grad(), log_capture(model, norms, reductions) as cap:
        logits = logits_of(model, ids).float()  # (1, T, vocab); position t predicts t + 1
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        grads = torch.autograd.grad(loss, params.tensors, allow_unused=True)
    return cap.result(), loss.item(), params.of_grads(grads)
