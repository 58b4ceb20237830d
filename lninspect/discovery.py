"""Find the normalization modules of a model, with their layer, role, eps and weight."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lninspect.results import NormDescription, WeightSummary

# Attribute names under which norm implementations keep their epsilon.
EPS_ATTRIBUTES = ("eps", "variance_epsilon", "epsilon", "layer_norm_eps", "layer_norm_epsilon")
DEFAULT_EPS = 1e-5  # F.layer_norm's default, for norms that keep eps nowhere we can read

# Role by the module's own attribute name inside its block (or at the top for `final`).
ROLE_BY_NAME = {
    "attn": {"ln_1", "input_layernorm", "attention_norm", "self_attn_layer_norm", "ln_attn",
             "attn_norm", "norm1", "norm_1", "pre_attention_layernorm"},
    "mlp": {"ln_2", "post_attention_layernorm", "ffn_norm", "final_layer_norm", "ln_mlp",
            "mlp_norm", "norm2", "norm_2", "pre_feedforward_layernorm", "pre_mlp_layernorm"},
    "final": {"ln_f", "norm", "final_layer_norm", "final_layernorm", "norm_f", "ln_out"},
}


@dataclass(frozen=True, eq=False)
class NormInfo:
    """One normalization module found in a model."""

    name: str  # dotted path from the model root
    module: nn.Module
    kind: str  # "layernorm" or "rmsnorm"
    layer: int | None  # index in the stack of blocks, None outside it
    role: str  # attn | mlp | final | other
    eps: float
    eps_known: bool  # False when eps was not found on the module and DEFAULT_EPS is assumed
    reduced_dims: int  # how many trailing axes the norm reduces over (normalized_shape)

    @property
    def type(self) -> str:
        return type(self.module).__name__

    def describe(self) -> NormDescription:
        """The module as plain data, for results and JSON."""
        return NormDescription(name=self.name, type=self.type, kind=self.kind, layer=self.layer,
                               role=self.role, eps=self.eps, weight=self.weight_summary())

    def weight_summary(self) -> WeightSummary | None:
        """Summary of the module's affine weight, or None for a norm without one."""
        weight = getattr(self.module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            return None
        w = weight.detach().float()
        return WeightSummary(
            mean=w.mean().item(),
            std=w.std(correction=0).item(),
            min=w.min().item(),
            max=w.max().item(),
            negative=int((w < 0).sum().item()),
        )


def is_norm(module: nn.Module) -> bool:
    """LayerNorm / RMSNorm, or a leaf module whose class name says it is one."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return True
    name = type(module).__name__.lower()
    has_children = next(module.children(), None) is not None
    return not has_children and name.endswith(("layernorm", "rmsnorm"))


def find_norms(model: nn.Module) -> list[NormInfo]:
    """Every normalization module of `model`, in registration order."""
    return [_describe(name, module) for name, module in model.named_modules() if is_norm(module)]


def _describe(name: str, module: nn.Module) -> NormInfo:
    eps = _read_eps(module)
    shape = getattr(module, "normalized_shape", None)
    layer = _layer_index(name)
    return NormInfo(
        name=name,
        module=module,
        kind=_kind(module),
        layer=layer,
        role=_role(name, layer),
        eps=DEFAULT_EPS if eps is None else eps,
        eps_known=eps is not None,
        reduced_dims=len(shape) if isinstance(shape, (tuple, list)) and shape else 1,
    )


def _kind(module: nn.Module) -> str:
    is_rms = isinstance(module, nn.RMSNorm) or type(module).__name__.lower().endswith("rmsnorm")
    return "rmsnorm" if is_rms else "layernorm"


def _read_eps(module: nn.Module) -> float | None:
    for attribute in EPS_ATTRIBUTES:
        value = getattr(module, attribute, None)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    if isinstance(module, nn.RMSNorm):  # eps=None: the machine epsilon of the weight's dtype
        weight = module.weight
        return torch.finfo(weight.dtype if weight is not None else torch.float32).eps
    return None


def _layer_index(name: str) -> int | None:
    """The first integer in the dotted path: `transformer.h.3.ln_1` is layer 3."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def _role(name: str, layer: int | None) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if layer is None:
        return "final" if leaf in ROLE_BY_NAME["final"] else "other"
    for role in ("attn", "mlp"):
        if leaf in ROLE_BY_NAME[role]:
            return role
    return "other"
