"""Group a model's parameter tensors by what they do, and read their gradient norms.

Groups: `embed` (token and position embeddings), `attn_in` / `attn_out` (projections into
and out of attention), `mlp_in` / `mlp_out` (into and out of the MLP), `norm_weight` /
`norm_bias` (the normalization modules' affine parameters), `head` (an untied output head)
and `other`. A linear layer's bias goes with its weight. A tied head (GPT-2's lm_head is
wte) appears once, as `embed`, and its gradient then includes the head's use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lninspect.hooks.transfer import to_host
from lninspect.norms.discovery import NormInfo
from lninspect.norms.placing import layer_index
from lninspect.results import ParamGrad
from lninspect.roles import in_sublayer

# The leaf names of projections, by family (GPT-2, LLaMA, GPT-NeoX, OPT, Falcon, GPT-J, ...).
ATTN_IN = {
    "c_attn",
    "q_proj",
    "k_proj",
    "v_proj",
    "qkv_proj",
    "query_key_value",
    "Wqkv",
    "query",
    "key",
    "value",
    "q_attn",
    "in_proj",
}
ATTN_OUT = {"c_proj", "o_proj", "out_proj", "dense", "wo"}
MLP_IN = {
    "c_fc",
    "fc1",
    "fc_in",
    "up_proj",
    "gate_proj",
    "gate_up_proj",
    "dense_h_to_4h",
    "w1",
    "w3",
}
MLP_OUT = {"c_proj", "fc2", "fc_out", "down_proj", "dense_4h_to_h", "w2"}


def param_group(name: str, model: nn.Module, norm_names: set[str]) -> str:
    """The group of parameter `name` (dotted, as in model.named_parameters())."""
    module_name, _, kind = name.rpartition(".")
    if module_name in norm_names:
        return "norm_bias" if kind == "bias" else "norm_weight"
    module = model.get_submodule(module_name) if module_name else model
    if isinstance(module, nn.Embedding):
        return "embed"
    output_embeddings = getattr(model, "get_output_embeddings", None)
    if callable(output_embeddings) and module is output_embeddings():
        return "head"
    leaf = module_name.rsplit(".", 1)[-1]
    sublayer = in_sublayer(module_name)
    if sublayer == "attn":
        return "attn_in" if leaf in ATTN_IN else "attn_out" if leaf in ATTN_OUT else "other"
    if sublayer == "mlp":
        return "mlp_in" if leaf in MLP_IN else "mlp_out" if leaf in MLP_OUT else "other"
    return "other"


def param_grads(model: nn.Module, norms: Sequence[NormInfo]) -> list[ParamGrad]:
    """Every parameter tensor with its group, layer and gradient norm (NaN without grad).

    The norms are computed on the device and read in one copy (not one sync per tensor).
    """
    norm_names = {n.name for n in norms}
    params = list(model.named_parameters())
    with torch.no_grad():
        computed = [
            torch.linalg.vector_norm(p.grad, dtype=torch.float32)
            for _, p in params
            if p.grad is not None
        ]
    values = iter(to_host(computed))
    return [
        ParamGrad(
            name=name,
            layer=layer_index(name),
            group=param_group(name, model, norm_names),
            grad_norm=float(next(values)) if param.grad is not None else float("nan"),
            numel=param.numel(),
        )
        for name, param in params
    ]
