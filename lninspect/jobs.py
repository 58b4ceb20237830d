"""The analysis jobs behind the CLI: load -> find norms -> capture -> result objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from lninspect.errors import LninspectError
from lninspect.hooks.capture import capture
from lninspect.hooks.params import param_grads
from lninspect.hooks.spikes import massive_mask
from lninspect.hooks.transfer import descriptions
from lninspect.model.loading import LoadedModel, check_layer_range, load_model
from lninspect.model.memory import Need, activation_bytes, check_fits
from lninspect.model.tokens import check_text, token_windows
from lninspect.norms.discovery import NormInfo, discover
from lninspect.options import RunOptions, SpikeOptions
from lninspect.results import Ablation, GradsResult, InputInfo, NormsResult, NormStats, StatsResult
from lninspect.summary import layer_span


@dataclass
class Prepared:
    """A loaded model, its norms, and the token ids to run it on."""

    loaded: LoadedModel
    norms: list[NormInfo]  # the norms to hook (--layers)
    all_norms: list[NormInfo]  # every norm of the model
    input_ids: torch.Tensor  # (sequences, tokens); each sequence runs as a pass of its own
    input: InputInfo


def prepare(options: RunOptions, grads: bool = False) -> Prepared:
    """Check the text first (cheap errors first), then load the model, pick norms, encode.

    Before anything runs, the memory of a pass (and of the gradients, with `grads`) is
    compared with what is free (lninspect.model.memory).
    """
    check_text(options)
    loaded = load(options)
    all_norms = model_norms(loaded)
    norms = select_layers(loaded, all_norms, options.layers)
    windows = token_windows(loaded, options)
    check_run_memory(loaded, max(map(len, windows)), 1, grads, "--max-tokens or --stride")
    info = InputInfo(
        num_sequences=len(windows),
        num_tokens=sum(map(len, windows)),
        tokens=[loaded.tokenizer.pieces(w) for w in windows],
        token_ids=windows,
    )
    input_ids = torch.tensor(windows, dtype=torch.long, device=loaded.device)
    return Prepared(
        loaded=loaded, norms=norms, all_norms=all_norms, input_ids=input_ids, input=info
    )


def run_stats(
    options: RunOptions, spikes: SpikeOptions | None = None, ablate: bool = False
) -> StatsResult:
    """Per-token statistics of every norm (and spikes, if asked), from one forward pass.

    `ablate` (with `spikes`) adds the loss with the massive activations replaced
    (`ablate_spikes`): two more forward passes.
    """
    prepared = prepare(options)
    model = prepared.loaded.model
    with (
        torch.inference_mode(),
        capture(model, prepared.norms, spikes=spikes, reductions=options.reductions) as cap,
    ):
        for ids in prepared.input_ids:
            model(input_ids=ids[None], use_cache=False)
    result = cap.result(model=prepared.loaded.info, input=prepared.input)
    if ablate and spikes is not None:
        result.ablation = ablate_spikes(prepared, result, spikes)
    return _finish(result, prepared, spikes)


Result = TypeVar("Result", bound=StatsResult)


def _finish(result: Result, prepared: Prepared, spikes: SpikeOptions | None) -> Result:
    """Add the run's notes and spike settings to a result."""
    result.notes = prepared.loaded.notes + _fired_twice(result) + _nonfinite(result)
    if spikes is not None:
        result.spike_z, result.top_k = spikes.z, spikes.top_k
        result.spike_abs, result.spike_ratio = spikes.magnitude, spikes.ratio
    return result


LOSSES = {
    "ce": "next-token cross-entropy, mean over predicted tokens",
    "target": "-log p(target token) at the last position",
}


def run_grads(
    options: RunOptions,
    loss: str = "ce",
    target: str | None = None,
    spikes: SpikeOptions | None = None,
    ablate: bool = False,
) -> GradsResult:
    """Per-token gradient norms at every norm and every parameter's, from one backward pass.

    The model runs in eval mode (no dropout) with gradient checkpointing off, so each norm
    fires once per pass and each backward hook once.
    """
    prepared = prepare(options, grads=True)
    model = prepared.loaded.model
    target_id = _target_id(prepared.loaded, target) if loss == "target" else None
    if loss == "ce" and prepared.input_ids.shape[1] < 2:
        raise LninspectError("next-token loss needs at least 2 tokens of text")
    if _disable_checkpointing(model):
        prepared.loaded.notes.append(
            "gradient checkpointing switched off so that hooks fire once per module"
        )
    model.zero_grad(set_to_none=True)
    losses = []
    hooked = capture(
        model, prepared.norms, grads=True, spikes=spikes, reductions=options.reductions
    )
    with torch.enable_grad(), hooked as cap:
        for ids in prepared.input_ids[:, None]:  # (1, tokens): windows add up to the mean loss
            value = _loss(model(input_ids=ids, use_cache=False).logits.float(), ids, target_id)
            (value / len(prepared.input_ids)).backward()
            losses.append(value.detach())  # read once after the last window: no sync per window
    stats = cap.result(model=prepared.loaded.info, input=prepared.input)
    params = param_grads(model, prepared.all_norms)
    model.zero_grad(set_to_none=True)
    base = {f.name: getattr(stats, f.name) for f in fields(StatsResult) if f.name != "schema"}
    result = GradsResult(
        **base,
        loss=float(torch.stack(losses).double().mean()),
        loss_kind=LOSSES[loss],
        params=params,
    )
    if ablate and spikes is not None:
        result.ablation = ablate_spikes(prepared, result, spikes, target_id)
    return _finish(result, prepared, spikes)


# Do the spikes matter? ------------------------------------------------------------------------

RESIDUAL_ROLES = ("attn", "attn+mlp", "mlp")  # pre norms whose input is the residual stream


def ablate_spikes(
    prepared: Prepared, result: StatsResult, spikes: SpikeOptions, target_id: int | None = None
) -> Ablation:
    """Sun et al.'s test: the LM loss with the massive activations of the first layer whose
    residual stream has them set to their mean over the tokens that carry them, and to 0.

    The entries are found again in each run by the same rule (the magnitude rule, at the
    input of that layer's first residual norm) and replaced in place in that input, which a
    pre-LN block shares with its residual stream. Each sequence runs as a pass of its own,
    as in the capture run; the loss is the same as `grads`' (mean next-token cross-entropy,
    or -log p(target)), averaged over sequences.
    """
    norm = first_massive_norm(result)
    loss = _forward_loss(prepared, target_id)
    if norm is None:
        return Ablation(
            layer=None, dims=[], loss=loss, loss_mean=float("nan"), loss_zero=float("nan")
        )
    module = dict(prepared.loaded.model.named_modules())[norm.name]
    runs: dict[str, float] = {}
    found: dict[str, torch.Tensor] = {}
    for how in ("mean", "zero"):
        found = {}
        hook = module.register_forward_pre_hook(_replace_massive(spikes, how, found))
        try:
            runs[how] = _forward_loss(prepared, target_id)
        finally:
            hook.remove()
    count = found["count"].cpu() if found else torch.zeros(0, dtype=torch.int64)
    return Ablation(
        layer=norm.layer,
        dims=[int(j) for j in count.nonzero().flatten()],
        loss=loss,
        loss_mean=runs["mean"],
        loss_zero=runs["zero"],
        module=norm.name,
        entries=int(count.sum()),
    )


def first_massive_norm(result: StatsResult) -> NormStats | None:
    """The first residual-stream pre norm, in layer order, whose input has a massive spike."""
    candidates = [
        n
        for n in result.norms
        if n.layer is not None
        and n.role in RESIDUAL_ROLES
        and n.placement == "pre"
        and any(s.massive for s in n.spikes or [])
    ]
    return min(candidates, key=lambda n: n.layer or 0, default=None)


def _replace_massive(
    spikes: SpikeOptions, how: str, found: dict[str, torch.Tensor]
) -> Callable[[torch.nn.Module, tuple[Any, ...]], None]:
    """A forward pre-hook that replaces, in place, the massive entries of the norm's input
    (batch, tokens, d) by their per-dimension mean over the tokens carrying them, or by 0.
    `found["count"]` adds up the entries per dimension on the device (no sync in the pass);
    it is read once the runs are over."""

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        mask = massive_mask(x.detach().abs().float(), spikes)  # (batch, tokens, d)
        count = mask.sum(dim=tuple(range(mask.dim() - 1)))  # (d,)
        if how == "mean":
            total = torch.where(mask, x.float(), 0).sum(dim=tuple(range(mask.dim() - 1)))
            value = (total / count.clamp(min=1)).to(x.dtype).expand_as(x)
        else:
            value = torch.zeros_like(x)
        x.copy_(torch.where(mask, value, x))
        found["count"] = found["count"] + count if "count" in found else count

    return hook


def _forward_loss(prepared: Prepared, target_id: int | None) -> float:
    """The LM loss of the prepared sequences, one pass each, averaged over sequences."""
    model = prepared.loaded.model
    losses = []
    with torch.inference_mode():
        for ids in prepared.input_ids[:, None]:
            logits = model(input_ids=ids, use_cache=False).logits.float()
            losses.append(_loss(logits, ids, target_id))
    return float(torch.stack(losses).mean())


def _disable_checkpointing(model: torch.nn.Module) -> bool:
    """Switch off gradient checkpointing (its re-run forward fires every hook twice).

    Returns whether it was on. Only transformers models have it.
    """
    attribute = next(
        (
            a
            for a in ("is_activation_checkpointing", "is_gradient_checkpointing")
            if hasattr(type(model), a)
        ),
        None,
    )
    disable = getattr(model, "gradient_checkpointing_disable", None)
    if attribute is not None and getattr(model, attribute) and callable(disable):
        disable()
        return True
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
    loaded = load(options, tokenizer=False)
    norms = select_layers(loaded, model_norms(loaded), options.layers)
    return NormsResult(model=loaded.info, norms=descriptions(norms), notes=loaded.notes)


def load(options: RunOptions, tokenizer: bool = True) -> LoadedModel:
    """The model and tokenizer that `options` name, on their device (--layers checked
    against the config before the weights load)."""
    return load_model(
        options.model,
        revision=options.revision,
        device=options.device,
        dtype=options.dtype,
        trust_remote_code=options.trust_remote_code,
        seed=options.seed,
        device_map=options.device_map,
        max_memory=options.max_memory,
        layers=options.layers,
        tokenizer=tokenizer,
    )


def check_run_memory(loaded: LoadedModel, tokens: int, batch: int, grads: bool, fewer: str) -> None:
    """Refuse a pass whose activations (and parameter gradients) exceed the free memory.

    Skipped with --device-map: accelerate spreads the activations over the devices.
    `fewer` names the options that make a pass smaller.
    """
    if loaded.info.source != "module" and getattr(loaded.model, "hf_device_map", None):
        return
    parameters = [*loaded.model.parameters()]
    item = parameters[0].element_size() if parameters else 4
    need = Need(
        parameters=0,
        activations=activation_bytes(loaded.model.config, tokens, batch, grads, item),
        gradients=sum(p.numel() * p.element_size() for p in parameters) if grads else 0,
    )
    what = f"a pass of {batch} x {tokens} tokens through '{loaded.info.name}'"
    check_fits(need, loaded.device, what, f"fewer tokens ({fewer}) or another --device")


def model_norms(loaded: LoadedModel) -> list[NormInfo]:
    """The model's norms; how they were found goes to the notes (generic discovery)."""
    found = discover(loaded.model)
    if not found.norms:
        raise LninspectError(
            f"model '{loaded.info.name}' has no normalization module "
            "(no LayerNorm or RMSNorm found)"
        )
    loaded.notes.extend(found.notes)
    return found.norms


def select_layers(
    loaded: LoadedModel, norms: list[NormInfo], layers: tuple[int, ...] | None
) -> list[NormInfo]:
    """The norms of the blocks in `layers` (all norms for None), checked against the model."""
    if layers is None:
        return norms
    count = loaded.info.num_layers or 1 + max(
        (n.layer for n in norms if n.layer is not None), default=-1
    )
    if not count:
        raise LninspectError(f"model '{loaded.info.name}' has no layers to select with --layers")
    check_layer_range(loaded.info.name, count, layers)
    chosen = [n for n in norms if n.layer in layers]
    if not chosen:
        raise LninspectError(f"no normalization module in --layers {layer_span(layers, ',')}")
    return chosen


def _nonfinite(result: StatsResult) -> list[str]:
    """One note per module whose input (or output gradient) held NaN or Inf."""
    notes = []
    for norm in result.norms:
        counts = [(norm.input.nonfinite, "inputs", " (their statistics are NaN)")]
        if norm.grad is not None:
            counts.append((norm.grad.output_nonfinite, "output-gradient entries", ""))
        for count, what, why in counts:
            if count is not None and count.sum() > 0:
                notes.append(
                    f"{norm.name}: {int(count.sum())} non-finite {what} in "
                    f"{int((count > 0).sum())} tokens{why}"
                )
    return notes


def _fired_twice(result: StatsResult) -> list[str]:
    return [
        f"{n.name} ran {n.calls} times in {result.passes} forward passes: its arrays hold "
        "every call"
        for n in result.norms
        if n.calls != result.passes
    ]
