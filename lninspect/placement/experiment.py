"""Gradient scales and the residual stream at initialization, for every norm layout
(lninspect.placement.layouts; Xiong et al. 2020's Theorem 1 for pre- and post-LN).

For each depth L, layout and seed: build the reference GPT, initialize it, compute the
LM loss on a batch of tokens and backpropagate once, inside lninspect's capture hooks.
Keep the Frobenius norm of the gradient of every block's weights, the statistics of every
norm's input (E|x|^2/d, Lemma 2's quantity) and the residual stream's variance after each
block per seed; the results summarize them (mean and 95% interval over the seeds) and
derive the ratios, slopes and growth laws seed by seed.

The runs use one CPU thread by default: their matrices are small (a few hundred tokens by
d), where intra-op threads gain little, and on a busy machine threads that spin waiting for
each other cost many times the work itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import cast

import numpy as np
import torch
from torch import nn

from lninspect.errors import LninspectError
from lninspect.hooks.capture import capture
from lninspect.norms.discovery import find_norms
from lninspect.placement.layouts import BRANCH_WEIGHTS, layout_named
from lninspect.placement.memory import check_placement_memory
from lninspect.placement.refgpt import GPT, Block, DynamicTanh, RefGPTConfig
from lninspect.results.placement import (
    GRAD_KEYS,
    PlacementConfig,
    PlacementResult,
    PlacementRun,
    growth_exponent,
    layer_trend,
    stream_growth,
    sweep_rows,
)
from lninspect.results.seeds import OverSeeds

# "grad_norm" | "input_std" | "input_ms" -> key -> (L,); "stream" -> "var" -> (L + 1,)
Measured = dict[str, dict[str, np.ndarray]]
GPT2_STD = 0.02  # GPT-2's weight std; its residual projections get 0.02 / sqrt(2L)
XAVIER_EMBEDDING_STD = math.sqrt(0.5)  # token + position embedding: E|x|^2/d = 1, as in Lemma 2


def run_placement(
    config: PlacementConfig, text: str | None = None, threads: int | None = 1
) -> PlacementResult:
    """Every depth in `config.layers`, every layout of `config.layouts`, over the seeds.

    `threads`: torch's intra-op threads during the runs (restored after); None keeps them.
    """
    check_placement_memory(config)  # before any model is built
    text_ids, notes = _text_ids(config, text)
    if text_ids is not None:  # record the shape the text gave: (sequences, tokens + 1)
        config = replace(
            config, tokens="bytes", batch=text_ids.shape[0], seq_len=text_ids.shape[1] - 1
        )
    with threads_for(threads):
        runs = [
            _run(config, layout, layers, text_ids)
            for layers in config.layers
            for layout in config.layouts
        ]
    sweep = sweep_rows(runs, config.baseline)
    return PlacementResult(
        config=config,
        runs=runs,
        sweep=sweep,
        growth_exponent=growth_exponent(sweep),
        notes=notes,
    )


@contextmanager
def threads_for(count: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block, then restore it."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(
    config: PlacementConfig,
    layout: str,
    layers: int,
    generator: torch.Generator,
    dropout: float = 0.0,
) -> GPT:
    """The reference GPT of this shape, initialized as `config.init` says."""
    model = GPT(
        RefGPTConfig(
            vocab_size=config.vocab_size,
            context=config.seq_len,
            layers=layers,
            d_model=config.d_model,
            heads=config.heads,
            mlp_ratio=config.mlp_ratio,
            layout=layout,
            norm=config.norm,
            dropout=dropout,
        )
    )
    initialize(model, config.init, generator)
    return model


@torch.no_grad()
def initialize(model: GPT, init: str, generator: torch.Generator) -> None:
    """`xavier`: the paper's setting (Xavier-normal weights, no residual scaling).
    `gpt2`: N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2L)).
    The layout's branch gain (DeepNorm's beta) multiplies the std of BRANCH_WEIGHTS in both.
    Norm gains are one, biases zero and DyT's alpha 0.5 (their construction values)."""
    if init not in ("xavier", "gpt2"):
        raise ValueError(f"init must be 'xavier' or 'gpt2', not {init!r}")
    layers = model.config.layers
    residual_std = GPT2_STD / math.sqrt(2 * layers)
    beta = layout_named(model.config.layout).branch_gain(layers)
    for name, module in model.named_modules():
        gain = beta if name.endswith(BRANCH_WEIGHTS) else 1.0
        if isinstance(module, nn.Embedding):
            std = XAVIER_EMBEDDING_STD if init == "xavier" else GPT2_STD
            nn.init.normal_(module.weight, std=std, generator=generator)
        elif isinstance(module, nn.Linear) and init == "xavier":
            nn.init.xavier_normal_(module.weight, gain=gain, generator=generator)
        elif isinstance(module, nn.Linear):
            residual = name.endswith(("attn.out", "mlp.fc_out"))
            std = residual_std if residual else GPT2_STD
            nn.init.normal_(module.weight, std=gain * std, generator=generator)


def measure_gradients(model: GPT, ids: torch.Tensor) -> tuple[float, Measured]:
    """The loss, and per layer: gradient norms, norm-input statistics and the stream's
    variance, for one batch."""
    model.zero_grad(set_to_none=True)
    keys = layout_named(model.config.layout).norm_keys()
    stream: list[torch.Tensor] = []
    with capture(model, find_norms(model, include=(DynamicTanh,))) as cap:
        loss = model.loss(ids, stream)
        loss.backward()
    stats = cap.result()
    values: dict[str, dict[str, list[float]]] = {
        "input_std": {k: [] for k in keys},
        "input_ms": {k: [] for k in keys},
    }
    for norm in stats.norms:  # in model order: blocks.0.ln_1, blocks.0.ln_2, ..., ln_f
        key = norm.name.rsplit(".", 1)[-1]
        values["input_std"][key].append(float(norm.input.std.mean()))
        values["input_ms"][key].append(
            float(np.mean(norm.input.rms.astype(np.float64) ** 2) - norm.eps)
        )
    measured = {name: {k: np.asarray(v) for k, v in d.items()} for name, d in values.items()}
    measured["grad_norm"] = _grad_norms(model)
    measured["stream"] = {"var": torch.stack(stream).double().numpy()}
    return loss.item(), measured


def _grad_norms(model: GPT) -> dict[str, np.ndarray]:
    """Frobenius norm of dL/dW per block for each of GRAD_KEYS."""

    def norm(*params: torch.Tensor) -> float:
        grads = [p.grad for p in params if p.grad is not None]
        return math.sqrt(sum(float(g.double().square().sum()) for g in grads))

    rows = [
        (
            norm(b.mlp.fc_out.weight),
            norm(b.mlp.fc_in.weight),
            norm(b.attn.out.weight),
            norm(*(cast(torch.Tensor, n.weight) for n in b.norm_modules())),
        )
        for b in cast(list[Block], list(model.blocks))
    ]
    columns = np.asarray(rows, dtype=np.float64).T  # (len(GRAD_KEYS), layers)
    return dict(zip(GRAD_KEYS, columns, strict=True))


def _run(
    config: PlacementConfig, layout: str, layers: int, text_ids: torch.Tensor | None
) -> PlacementRun:
    """One layout at one depth, over every seed."""
    losses, per_seed = [], []
    for seed in range(config.seeds):
        generator = torch.Generator().manual_seed(seed)
        # Tokens first, from the same stream: every layout and depth sees the same batch,
        # and every layout of a seed the same weights (up to its init gain).
        ids = _random_ids(config, generator) if text_ids is None else text_ids
        loss, measured = measure_gradients(build_model(config, layout, layers, generator), ids)
        losses.append(loss)
        per_seed.append(measured)
    stacked = {  # name -> key -> (seeds, L)
        name: {key: np.stack([m[name][key] for m in per_seed]) for key in per_seed[0][name]}
        for name in per_seed[0]
    }
    summary = {name: {k: OverSeeds.of(v) for k, v in d.items()} for name, d in stacked.items()}
    first_over_last, slope = layer_trend(stacked["grad_norm"]["ffn_out"])
    return PlacementRun(
        layout=layout,
        norm=config.norm,
        layers=layers,
        grad_norm=summary["grad_norm"],
        input_std=summary["input_std"],
        input_ms=summary["input_ms"],
        loss=OverSeeds.of(losses),
        first_over_last=OverSeeds.of(first_over_last),
        slope=OverSeeds.of(slope),
        stream_var=summary["stream"]["var"],
        stream_growth=stream_growth(stacked["stream"]["var"]),
    )


def _random_ids(config: PlacementConfig, generator: torch.Generator) -> torch.Tensor:
    """Uniform token ids of shape (batch, seq_len + 1): inputs and next-token targets."""
    return torch.randint(config.vocab_size, (config.batch, config.seq_len + 1), generator=generator)


def _text_ids(config: PlacementConfig, text: str | None) -> tuple[torch.Tensor | None, list[str]]:
    """The UTF-8 bytes of `text` as token ids, cut into at most `batch` sequences."""
    if text is None:
        return None, []
    data = list(text.encode("utf-8"))
    if len(data) < 2:
        raise LninspectError("the text must be at least 2 bytes long (tokens are its bytes)")
    if max(data) >= config.vocab_size:
        raise LninspectError(f"the text's bytes need a vocabulary of 256, not {config.vocab_size}")
    width = min(len(data), config.seq_len + 1)
    rows = min(config.batch, len(data) // width)
    notes = []
    if rows * width < len(data):
        notes.append(
            f"the text has {len(data)} bytes: used the first {rows * width} "
            f"({rows} sequence{'s' if rows > 1 else ''} of {width} tokens)"
        )
    ids = torch.tensor(data[: rows * width]).view(rows, width)  # (sequences, tokens + 1)
    return ids, notes
