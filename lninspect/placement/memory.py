"""The placement experiment's memory, checked before any model is built.

A depth of thousands of blocks would otherwise run for minutes before the kernel killed it
for its memory. The runs build one model at a time, so the deepest one bounds the memory:
its parameters (counted on the meta device for each layout asked for, the largest: the
model with one block, plus L - 1 more blocks), their gradients, and the activations its
backward pass keeps (lninspect.model.memory.activation_bytes).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import torch

from lninspect.model.checks import estimated_parameters
from lninspect.model.memory import Need, activation_bytes, check_fits, parameter_bytes
from lninspect.placement.refgpt import GPT, Block, RefGPTConfig
from lninspect.results.placement import PlacementConfig


def check_placement_memory(
    config: PlacementConfig, device: torch.device | None = None, training: bool = False
) -> None:
    """Refuse (exit 2) an experiment whose deepest model does not fit in free memory.

    `training` (placement --train) adds Adam's two moment estimates per parameter, counted
    with the gradients; `device` is where the models run (the CPU by default).
    """
    deepest = max(config.layers)
    shape = RefGPTConfig(
        vocab_size=config.vocab_size,
        context=config.seq_len,
        layers=1,
        d_model=config.d_model,
        heads=config.heads,
        mlp_ratio=config.mlp_ratio,
        norm=config.norm,
    )
    described = SimpleNamespace(
        hidden_size=config.d_model,
        intermediate_size=config.mlp_ratio * config.d_model,
        num_attention_heads=config.heads,
        num_hidden_layers=deepest,
        vocab_size=config.vocab_size,
    )
    estimate = estimated_parameters(SimpleNamespace(**vars(described), n_positions=config.seq_len))
    _fits(Need(parameters=4 * estimate), device, deepest)  # before building anything
    parameters = max(
        _parameter_bytes(replace(shape, layout=layout), deepest) for layout in config.layouts
    )
    need = Need(
        parameters=parameters,
        gradients=parameters * (3 if training else 1),
        activations=activation_bytes(described, config.seq_len, config.batch, True, 4),
    )
    _fits(need, device, deepest)


def _parameter_bytes(shape: RefGPTConfig, layers: int) -> int:
    """The float32 parameters of a model of `layers` blocks of this shape and layout."""
    one = parameter_bytes(lambda: GPT(shape), torch.float32)
    return one + (layers - 1) * parameter_bytes(lambda: Block(shape), torch.float32)


def _fits(need: Need, device: torch.device | None, deepest: int) -> None:
    check_fits(
        need,
        device or torch.device("cpu"),
        f"the placement experiment at L = {deepest}",
        "fewer layers=, a smaller d_model=, mlp_ratio=, seq_len= or batch=",
    )
