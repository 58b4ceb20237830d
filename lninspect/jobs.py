"""The analysis jobs behind the CLI: load -> find norms -> capture -> result objects; and the
compare job, the same text through several models one at a time (each released before the
next one loads), matched norm by norm (lninspect.comparison)."""

from __future__ import annotations

import difflib
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

import torch

from lninspect.comparison import compare_results, split_revision
from lninspect.derived import layer_span
from lninspect.errors import LninspectError
from lninspect.hooks.ablation import ablate_spikes, lm_loss
from lninspect.hooks.capture import capture
from lninspect.hooks.freeze import measure_freezing
from lninspect.hooks.params import param_grads
from lninspect.hooks.transfer import descriptions
from lninspect.model.loading import LoadedModel, check_layer_range, load_model
from lninspect.model.memory import Need, activation_bytes, check_fits
from lninspect.model.text import read_text, training_documents
from lninspect.model.tokens import check_text, token_windows
from lninspect.norms.discovery import NormInfo, NotANorm, discover
from lninspect.options import Loss, MapOptions, Progress, RunOptions, SpikeOptions
from lninspect.results import Ablation, GradsResult, InputInfo, NormsResult, StatsResult
from lninspect.results.compare import CompareResult


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
    all_norms = model_norms(loaded, options.norm_classes)
    norms = select_layers(loaded, all_norms, options.layers)
    windows = token_windows(loaded, options)
    check_run_memory(loaded, max(map(len, windows)), 1, grads, "max_tokens= or stride=")
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
    options: RunOptions,
    spikes: SpikeOptions | None = None,
    ablate: bool = False,
    maps: MapOptions | None = None,
    progress: Progress | None = None,
) -> StatsResult:
    """Per-token statistics of every norm (and spikes, if asked), from one forward pass.

    `ablate` (with `spikes`) adds the loss with the massive activations replaced
    (`ablate_spikes`): two more forward passes. `maps` samples each norm's map
    (lninspect.hooks.normmap); `progress` is told each text that --freeze-scale ran.
    """
    prepared = prepare(options)
    model = prepared.loaded.model
    with (
        torch.inference_mode(),
        capture(
            model, prepared.norms, spikes=spikes, reductions=options.reductions, maps=maps
        ) as cap,
    ):
        for ids in prepared.input_ids:
            model(input_ids=ids[None], use_cache=False)
    result = cap.result(model=prepared.loaded.info, input=prepared.input)
    if ablate and spikes is not None:
        result.ablation = _ablation(prepared, result, spikes)
    if maps is not None and maps.freeze:
        freeze_scale(prepared, result, maps, progress)
    return _finish(result, prepared, spikes)


ABLATION_TEXTS = 8  # bundled documents the ablation's mean is taken over, by default
ABLATION_TOKENS = 64  # tokens of each


def _ablation(
    prepared: Prepared, result: StatsResult, spikes: SpikeOptions, target_id: int | None = None
) -> Ablation:
    """Sun et al.'s ablation (lninspect.hooks.ablation) of the run's text, with the mean
    over other texts: the lines of --ablate-file, else the first bundled documents."""
    others = other_texts(prepared, spikes.ablate_file)
    sequences = list(prepared.input_ids[:, None])
    model = prepared.loaded.model
    return ablate_spikes(model, result, sequences, others, spikes, target_id)


def other_texts(prepared: Prepared, path: Path | None) -> list[torch.Tensor]:
    """Token ids (1, tokens) of the other texts of the ablation and of freezing: the
    lines of `path`, else the first bundled documents, ABLATION_TOKENS tokens each."""
    if path is not None:
        text = read_text(None, path).text
        texts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        texts = training_documents()[:ABLATION_TEXTS]
    device = prepared.loaded.device
    tokens = min(ABLATION_TOKENS, prepared.loaded.context or ABLATION_TOKENS)
    encoded = [prepared.loaded.tokenizer.encode(t)[:tokens] for t in texts]
    return [torch.tensor([ids], device=device) for ids in encoded if len(ids) >= 2]


def freeze_scale(
    prepared: Prepared, result: StatsResult, maps: MapOptions, progress: Progress | None = None
) -> None:
    """--freeze-scale (lninspect.hooks.freeze): the document's `freeze`, each norm's."""
    calibration = other_texts(prepared, maps.calibration_file)
    sequences = list(prepared.input_ids[:, None])
    ran = {n.name for n in result.norms}
    norms = [n for n in prepared.norms if n.name in ran]

    def on_text(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total, "freezing s: every configuration, text by text")

    model = prepared.loaded.model
    result.freeze, per_norm = measure_freezing(model, norms, sequences, calibration, on_text)
    for norm in result.norms:
        norm.freeze = per_norm.get(norm.name)


Result = TypeVar("Result", bound=StatsResult)


def _finish(result: Result, prepared: Prepared, spikes: SpikeOptions | None) -> Result:
    """Add the run's notes and spike settings to a result."""
    result.notes = prepared.loaded.notes + _fired_twice(result) + _nonfinite(result)
    if spikes is not None:
        result.spike_z, result.top_k = spikes.spike_z, spikes.top_k
        result.spike_abs, result.spike_ratio = spikes.spike_abs, spikes.spike_ratio
    return result


LOSSES: dict[Loss, str] = {
    "ce": "next-token cross-entropy, mean over predicted tokens",
    "target": "-log p(target token) at the last position",
}


def run_grads(
    options: RunOptions,
    loss: Loss = "ce",
    target: str | None = None,
    spikes: SpikeOptions | None = None,
    ablate: bool = False,
    maps: MapOptions | None = None,
    progress: Progress | None = None,
) -> GradsResult:
    """Per-token gradient norms at every norm and every parameter's, from one backward pass.

    The model runs in eval mode (no dropout) with gradient checkpointing off, so each norm
    fires once per pass and each backward hook once. `maps` and `progress` as in run_stats.
    """
    prepared = prepare(options, grads=True)
    model = prepared.loaded.model
    target_id = _target_id(prepared.loaded, target) if loss == "target" else None
    if target is not None and loss != "target":
        prepared.loaded.notes.append(f"target= is used by loss=target only; ignored (loss={loss})")
    if loss == "ce" and prepared.input_ids.shape[1] < 2:
        raise LninspectError("next-token loss needs at least 2 tokens of text")
    if _disable_checkpointing(model):
        prepared.loaded.notes.append(
            "gradient checkpointing switched off so that hooks fire once per module"
        )
    model.zero_grad(set_to_none=True)
    losses = []
    hooked = capture(
        model, prepared.norms, grads=True, spikes=spikes, reductions=options.reductions, maps=maps
    )
    with torch.enable_grad(), hooked as cap:
        for ids in prepared.input_ids[:, None]:  # (1, tokens): windows add up to the mean loss
            value = lm_loss(model(input_ids=ids, use_cache=False).logits.float(), ids, target_id)
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
        result.ablation = _ablation(prepared, result, spikes, target_id)
    if maps is not None and maps.freeze:
        freeze_scale(prepared, result, maps, progress)
    return _finish(result, prepared, spikes)


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


def _target_id(loaded: LoadedModel, target: str | None) -> int:
    if not target:
        raise LninspectError("loss=target needs target= (the token to score)")
    ids = loaded.tokenizer.encode(target, special_tokens=False)
    if len(ids) != 1:
        pieces = loaded.tokenizer.pieces(ids)
        raise LninspectError(f"target='{target}' is {len(ids)} tokens ({pieces}); give one token")
    return ids[0]


def describe_norms(options: RunOptions) -> NormsResult:
    """The normalization modules of a model; nothing runs through it."""
    loaded = load(options, tokenizer=False, init_once=True)
    norms = select_layers(loaded, model_norms(loaded, options.norm_classes), options.layers)
    return NormsResult(model=loaded.info, norms=descriptions(norms), notes=loaded.notes)


def load(options: RunOptions, tokenizer: bool = True, init_once: bool = False) -> LoadedModel:
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
        gguf_file=options.gguf_file,
        layers=options.layers,
        tokenizer=tokenizer,
        init_once=init_once,
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
    check_fits(need, loaded.device, what, f"fewer tokens ({fewer}) or another device=")


def model_norms(loaded: LoadedModel, norm_classes: tuple[str, ...] = ()) -> list[NormInfo]:
    """The model's norms (and those of the classes named by --norm-class); how they were
    found goes to the notes (generic discovery, modules that look like norms)."""
    try:
        found = discover(loaded.model, norm_classes_of(loaded.model, norm_classes))
    except NotANorm as refused:
        raise LninspectError(
            f"norm_classes={refused.cls_name}: not a normalization module: {refused.why}"
        ) from None
    if not found.norms:
        why = "; ".join(found.notes) or "no LayerNorm or RMSNorm found"
        raise LninspectError(f"model '{loaded.info.name}' has no normalization module ({why})")
    loaded.notes.extend(found.notes)
    return found.norms


def norm_classes_of(model: torch.nn.Module, names: tuple[str, ...]) -> tuple[type, ...]:
    """The classes of the model's modules named by --norm-class; a name no module has is
    refused, with the closest class names the model does have."""
    classes = {type(m).__name__: type(m) for m in model.modules()}
    for name in names:
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LninspectError(
                f"norm_classes={name}: no module of the model has that class{hint}"
            )
    return tuple(classes[name] for name in names)


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
        raise LninspectError(f"model '{loaded.info.name}' has no layers to select with layers=")
    check_layer_range(loaded.info.name, count, layers)
    chosen = [n for n in norms if n.layer in layers]
    if not chosen:
        raise LninspectError(f"no normalization module in layers={layer_span(layers, ',')}")
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


def run_models(
    specs: Sequence[str],
    options: RunOptions,
    spikes: SpikeOptions,
    progress: Callable[[str], None] | None = None,
) -> list[GradsResult]:
    """The grads result (with spikes) of every model spec on the same text."""
    if len(specs) < 2:
        raise LninspectError("compare needs at least two models")
    results = []
    for spec in specs:
        name, revision = split_revision(spec)
        if progress is not None:
            progress(spec)
        run = replace(options, model=name, revision=revision or options.revision)
        results.append(run_grads(run, "ce", None, spikes=spikes))
        gc.collect()  # the model of this run is no longer referenced: free it now
    return results


def run_compare(
    specs: Sequence[str],
    options: RunOptions,
    spikes: SpikeOptions,
    progress: Callable[[str], None] | None = None,
) -> CompareResult:
    """Several models on one text, matched norm by norm, with their largest differences."""
    return compare_results(run_models(specs, options, spikes, progress), specs)
