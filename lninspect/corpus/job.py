"""`lninspect stats` over a corpus: stream batches through the hooked model, aggregate as we go.

load -> find norms -> for each batch: forward inside `capture`, drain the per-call records
into an Aggregator (lninspect.corpus.aggregator) -> all-reduce across torchrun ranks -> result.
Nothing grows with the corpus: records are dropped after each batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from lninspect.corpus.aggregator import Aggregator
from lninspect.corpus.distributed import World, process_group, rank_device, sum_ints, world_from_env
from lninspect.corpus.reader import (
    DEFAULT_SEQ_LEN,
    CorpusReader,
    Encode,
    expand_files,
)
from lninspect.errors import LninspectError
from lninspect.hooks.capture import capture
from lninspect.hooks.census import trajectory
from lninspect.hooks.normmap import merge_ranks
from lninspect.jobs import check_run_memory, load, model_norms, select_layers
from lninspect.model.loading import LoadedModel
from lninspect.model.tokenizer import Tokenizer
from lninspect.options import CorpusOptions, MapOptions, RunOptions, SpikeOptions
from lninspect.results.aggregate import AggregateResult, CorpusInfo, NormAggregate
from lninspect.results.normmap import NormMap

# Called after each batch with (tokens run by this process, bytes read, bytes in all files).
OnBatch = Callable[[int, int, int], None]


def run_corpus_stats(
    options: RunOptions,
    corpus: CorpusOptions,
    spikes: SpikeOptions | None = None,
    on_batch: OnBatch | None = None,
    world: World | None = None,
    maps: MapOptions | None = None,
) -> AggregateResult:
    """Per-position statistics of every norm over a corpus; every rank returns the total.
    `maps` with `sample`: each norm's map sampled over the whole corpus (--map), in the
    memory of its sample size whatever the corpus's length."""
    _check(options)
    paths = expand_files(corpus.files)  # cheap errors first
    world = world or world_from_env()
    if world.distributed and options.device_map is not None:
        raise LninspectError(
            "device_map= cannot be combined with torchrun: each rank would "
            "spread its own copy of the model over the same devices"
        )
    loaded = load(replace(options, device=rank_device(world, options.device)))
    with process_group(world, loaded.device):
        norms = select_layers(loaded, model_norms(loaded, options.norm_classes), options.layers)
        seq_len = sequence_length(loaded, corpus.seq_len)
        check_run_memory(loaded, seq_len, corpus.batch, False, "seq_len= or batch_size=")
        reader = CorpusReader(
            paths,
            corpus,
            encoder(loaded.tokenizer, options),
            _eos(loaded.tokenizer),
            getattr(loaded.model.config, "vocab_size", None),
        )
        aggregator = Aggregator(norms, seq_len, loaded.device, spikes=spikes is not None)

        def after_batch(tokens: int) -> None:
            if on_batch is not None:
                on_batch(tokens, reader.bytes_read, reader.total_bytes)

        passes, sampled = stream(
            loaded,
            aggregator,
            reader.batches(seq_len, corpus.batch, world.rank, world.size),
            spikes,
            after_batch,
            reductions=options.reductions,
            maps=maps,
            world=world,
        )
        if world.distributed:
            aggregator.all_reduce()
        (passes,) = sum_ints([passes], aggregator.device)
    if aggregator.tokens == 0:
        raise LninspectError("the corpus has no text: every file is empty")
    info = CorpusInfo(
        files=[str(p) for p in paths],
        documents=reader.document_count,
        sequences=aggregator.sequences,
        tokens=aggregator.tokens,
        seq_len=seq_len,
        batch_size=corpus.batch,
        world_size=world.size,
    )
    piece = loaded.tokenizer.pieces
    chosen = spikes if spikes is not None else SpikeOptions(census_dims=0)
    results = aggregator.norm_results(chosen.census_dims, lambda i: piece([i])[0], chosen.outlier_k)
    for norm in results:
        norm.map = sampled.get(norm.name)
    return AggregateResult(
        model=loaded.info,
        corpus=info,
        norms=results,
        passes=passes,
        notes=loaded.notes + _notes(results, passes),
        spike_z=spikes.spike_z if spikes is not None else None,
        spike_abs=spikes.spike_abs if spikes is not None else None,
        spike_ratio=spikes.spike_ratio if spikes is not None else None,
        trajectory=trajectory(
            aggregator.census,
            loaded.info.hidden_size,
            {n.name for n in aggregator.norms if n.reads == "residual"},
        ),
    )


def _check(options: RunOptions) -> None:
    """Refuse the options of single-text mode."""
    if options.text is not None:
        raise LninspectError("give either text= or a corpus (files=...), not both")
    if options.max_tokens is not None or options.stride is not None:
        raise LninspectError(
            "max_tokens= and stride= apply to one text; a corpus is cut by "
            "seq_len= and limited by max_sequences="
        )


def stream(
    loaded: LoadedModel,
    aggregator: Aggregator,
    batches: Iterator[np.ndarray],
    spikes: SpikeOptions | None,
    after_batch: Callable[[int], None],
    reductions: str = "auto",
    maps: MapOptions | None = None,
    world: World | None = None,
) -> tuple[int, dict[str, NormMap]]:
    """Run every batch through the hooked model, aggregating and forgetting its records.

    Returns the forward passes run and, with `maps`, each norm's sampled map (of every
    rank's batches under torchrun). The LM head computes the last position's logits only
    (`logits_to_keep=1`, where the model takes it): no norm sits after it.
    """
    model = loaded.model
    extra = forward_kwargs(model)
    tokens = 0
    hooked = capture(model, aggregator.norms, spikes=spikes, reductions=reductions, maps=maps)
    with torch.inference_mode(), hooked as cap:
        for ids in batches:
            on_device = to_device(ids, loaded.device)
            model(input_ids=on_device, use_cache=False, **extra)
            aggregator.update(cap.drain(), ids.shape, on_device)
            tokens += ids.size
            after_batch(tokens)
        if cap.samplers and world is not None and world.distributed:
            merge_ranks(cap.samplers, loaded.device, world.size)
        return cap.passes, cap.maps()


def to_device(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    """Token ids on the model's device; to CUDA through pinned memory, so that the copy does
    not wait for the previous batch to finish."""
    tensor = torch.from_numpy(ids)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """Keyword arguments that spare the forward pass work no norm needs."""
    parameters = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}


def sequence_length(loaded: LoadedModel, seq_len: int | None) -> int:
    """--seq-len, checked against the model's context; by default min(context, 1024)."""
    context = loaded.context
    if seq_len is None:
        return min(context or DEFAULT_SEQ_LEN, DEFAULT_SEQ_LEN)
    if context is not None and seq_len > context:
        raise LninspectError(
            f"seq_len={seq_len} is longer than the model's context of {context} tokens"
        )
    return seq_len


def encoder(tokenizer: Tokenizer, options: RunOptions | None = None) -> Encode:
    """A document's token ids as a run's text gets them (Tokenizer.encode_text): --bos and
    --chat-template apply to each document, so with `--bos yes` every document starts with
    the BOS token (the sequences are cut from the documents' concatenation, so a sequence
    starts with one where a document does); no warning about long documents."""
    bos = options.bos if options is not None else "auto"
    chat = options.chat_template if options is not None else False
    return lambda text: tokenizer.encode_text(text, bos, chat)


def _eos(tokenizer: Tokenizer) -> int | None:
    return getattr(tokenizer.hf, "eos_token_id", None) if tokenizer.hf is not None else None


def _notes(norms: list[NormAggregate], passes: int) -> list[str]:
    """Modules that ran more than once per pass, and those that saw non-finite values."""
    notes = [
        f"{n.name} ran {n.calls} times in {passes} forward passes: every call is counted"
        for n in norms
        if n.calls != passes
    ]
    for norm in norms:
        tokens = norm.positions["mean"].nonfinite
        if tokens:
            notes.append(
                f"{norm.name}: {tokens} tokens with non-finite inputs (left out of its statistics)"
            )
    return notes
