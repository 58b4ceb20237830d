"""The analysis jobs behind the CLI: load -> find norms -> capture -> result objects."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lninspect.capture import capture
from lninspect.discovery import NormInfo, find_norms
from lninspect.errors import LninspectError
from lninspect.loading import LoadedModel, load_model
from lninspect.options import RunOptions
from lninspect.results import InputInfo, NormsResult, StatsResult
from lninspect.text import read_text


@dataclass
class Prepared:
    """A loaded model, its norms, and the token ids to run it on."""

    loaded: LoadedModel
    norms: list[NormInfo]
    input_ids: torch.Tensor  # (sequences, tokens)
    input: InputInfo


def prepare(options: RunOptions) -> Prepared:
    """Read the text first (cheap errors first), then load the model and encode."""
    text = read_text(options.text, options.file, options.encoding)
    loaded = _load(options)
    norms = _require_norms(loaded)
    ids = _token_ids(loaded, text, options.max_tokens)
    info = InputInfo(num_sequences=1, num_tokens=len(ids), tokens=[loaded.tokenizer.pieces(ids)],
                     token_ids=[ids])
    input_ids = torch.tensor([ids], dtype=torch.long, device=loaded.device)
    return Prepared(loaded=loaded, norms=norms, input_ids=input_ids, input=info)


def run_stats(options: RunOptions) -> StatsResult:
    """Per-token statistics of every norm, from one forward pass without gradients."""
    prepared = prepare(options)
    model = prepared.loaded.model
    with torch.inference_mode(), capture(model, prepared.norms) as cap:
        model(input_ids=prepared.input_ids, use_cache=False)
    result = cap.result(model=prepared.loaded.info, input=prepared.input)
    result.notes = prepared.loaded.notes + _fired_twice(result)
    return result


def describe_norms(options: RunOptions) -> NormsResult:
    """The normalization modules of a model; nothing runs through it."""
    loaded = _load(options)
    norms = _require_norms(loaded)
    return NormsResult(model=loaded.info, norms=[n.describe() for n in norms],
                       notes=loaded.notes)


def _load(options: RunOptions) -> LoadedModel:
    return load_model(options.model, revision=options.revision, device=options.device,
                      dtype=options.dtype, trust_remote_code=options.trust_remote_code,
                      seed=options.seed)


def _require_norms(loaded: LoadedModel) -> list[NormInfo]:
    norms = find_norms(loaded.model)
    if not norms:
        raise LninspectError(f"model '{loaded.info.name}' has no normalization module "
                             "(no LayerNorm or RMSNorm found)")
    return norms


def _token_ids(loaded: LoadedModel, text: str, max_tokens: int | None) -> list[int]:
    """Encode `text`, keeping at most `max_tokens` and at most the model's context."""
    ids = loaded.tokenizer.encode(text)
    if not ids:
        raise LninspectError("the text encodes to no tokens")
    vocab = getattr(loaded.model.config, "vocab_size", None)
    if vocab is not None and max(ids) >= vocab:
        raise LninspectError(f"the tokenizer produced id {max(ids)}, outside the model's "
                             f"vocabulary of {vocab}")
    limits = [(v, why) for v, why in ((max_tokens, "--max-tokens"),
                                      (loaded.context, "the model's context")) if v]
    limit, why = min(limits, default=(None, ""))
    if limit is not None and len(ids) > limit:
        loaded.notes.append(f"the text has {len(ids)} tokens: kept the first {limit} ({why})")
        ids = ids[:limit]
    return ids


def _fired_twice(result: StatsResult) -> list[str]:
    return [f"{n.name} ran {n.calls} times in {result.passes} forward passes: its arrays hold "
            "every call" for n in result.norms if n.calls != result.passes]
