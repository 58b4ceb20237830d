"""The analysis jobs behind the CLI: load -> find norms -> capture -> result objects."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from lninspect.hooks import capture
from lninspect.discovery import NormInfo, discover
from lninspect.errors import LninspectError
from lninspect.loading import LoadedModel, load_model
from lninspect.options import RunOptions, SpikeOptions
from lninspect.params import param_grads
from lninspect.results import GradsResult, InputInfo, NormsResult, StatsResult
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


def run_stats(options: RunOptions, spikes: SpikeOptions | None = None) -> StatsResult:
    """Per-token statistics of every norm (and spikes, if asked), from one forward pass."""
    prepared = prepare(options)
    model = prepared.loaded.model
    with torch.inference_mode(), capture(model, prepared.norms, spikes=spikes) as cap:
        model(input_ids=prepared.input_ids, use_cache=False)
    result = cap.result(model=prepared.loaded.info, input=prepared.input)
    return _finish(result, prepared, spikes)


def _finish(result: StatsResult, prepared: Prepared, spikes: SpikeOptions | None) -> StatsResult:
    """Add the run's notes and spike settings to a result."""
    result.notes = prepared.loaded.notes + _fired_twice(result)
    if spikes is not None:
        result.spike_z, result.top_k = spikes.z, spikes.top_k
    return result


LOSSES = {
    "ce": "next-token cross-entropy, mean over predicted tokens",
    "target": "-log p(target token) at the last position",
}


def run_grads(options: RunOptions, loss: str = "ce", target: str | None = None,
              spikes: SpikeOptions | None = None) -> GradsResult:
    """Per-token gradient norms at every norm and every parameter's, from one backward pass.

    The model runs in eval mode (no dropout) with gradient checkpointing off, so each norm
    fires once per pass and each backward hook once.
    """
    prepared = prepare(options)
    model = prepared.loaded.model
    target_id = _target_id(prepared.loaded, target) if loss == "target" else None
    if loss == "ce" and prepared.input_ids.shape[1] < 2:
        raise LninspectError("next-token loss needs at least 2 tokens of text")
    if _checkpointing(model):
        model.gradient_checkpointing_disable()
        prepared.loaded.notes.append("gradient checkpointing switched off so that hooks fire once per module")
    model.zero_grad(set_to_none=True)
    with torch.enable_grad(), capture(model, prepared.norms, grads=True, spikes=spikes) as cap:
        logits = model(input_ids=prepared.input_ids, use_cache=False).logits
        value = _loss(logits.float(), prepared.input_ids, target_id)
        value.backward()
    stats = cap.result(model=prepared.loaded.info, input=prepared.input)
    params = param_grads(model, prepared.norms)
    model.zero_grad(set_to_none=True)
    base = {f.name: getattr(stats, f.name) for f in fields(StatsResult) if f.name != "schema"}
    result = GradsResult(**base, loss=value.item(), loss_kind=LOSSES[loss], params=params)
    return _finish(result, prepared, spikes)


def _checkpointing(model: torch.nn.Module) -> bool:
    """Whether a transformers model recomputes activations in backward (so hooks fire twice)."""
    for attribute in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), attribute):
            return bool(getattr(model, attribute))
    return False


def _loss(logits: torch.Tensor, ids: torch.Tensor, target_id: int | None) -> torch.Tensor:
    """Mean next-token cross-entropy, or -log p(target) at the last position."""
    if target_id is None:  # logits: (B, T, vocab); position t predicts token t + 1
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    return -F.log_softmax(logits[:, -1], dim=-1)[:, target_id].mean()


def _target_id(loaded: LoadedModel, target: str | None) -> int:
    if not target:
        raise LninspectError("--loss target needs --target TOKEN (the token to score)")
    ids = loaded.tokenizer.encode(target, special_tokens=False)
    if len(ids) != 1:
        pieces = loaded.tokenizer.pieces(ids)
        raise LninspectError(f"--target '{target}' is {len(ids)} tokens ({pieces}); give one token")
    return ids[0]


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
    """The model's norms; how they were found goes to the notes (generic discovery)."""
    found = discover(loaded.model)
    if not found.norms:
        raise LninspectError(f"model '{loaded.info.name}' has no normalization module "
                             "(no LayerNorm or RMSNorm found)")
    loaded.notes.extend(found.notes)
    return found.norms


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
