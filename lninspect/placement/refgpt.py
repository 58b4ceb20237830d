"""A small reference GPT whose norm layout is a switch (lninspect.placement.layouts), e.g.

    pre:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x));  ...;  logits = head(ln_f(x))
    post: x = ln_1(x + attn(x));  x = ln_2(x + mlp(x));  ...;  logits = head(x)
    peri: x = x + ln_1_post(attn(ln_1(x)));  ...;  logits = head(ln_f(x))

With `dropout` > 0 (training), dropout acts on the embeddings and on the output of every
attention and MLP branch before it joins the residual stream, as GPT-2's resid_pdrop does.

The norms are written from their formulas; their class names end in LayerNorm / RMSNorm
so that lninspect's discovery finds them (DynamicTanh is passed to it as `include`), and
they are named `blocks.{i}.ln_1`, `blocks.{i}.ln_2` (`ln_1_post`, `ln_2_post` for peri-LN)
and `ln_f` as in GPT-2. Initialization is left to the caller
(lninspect.placement.experiment); PyTorch's defaults apply until then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lninspect.placement.layouts import Layout, layout_named

Tensor = torch.Tensor


@dataclass(frozen=True)
class RefGPTConfig:
    vocab_size: int = 2048  # token ids are 0 .. vocab_size - 1
    context: int = 128  # longest sequence: rows of the position embedding
    layers: int = 12  # number of blocks, L
    d_model: int = 256  # width d of the residual stream
    heads: int = 4  # attention heads; d_model must be divisible by it
    mlp_ratio: int = 1  # FFN hidden width / d: 1 as in the paper's analysis, 4 in GPT-2
    layout: str = "pre"  # where the norms sit: a name of lninspect.placement.layouts.LAYOUTS
    norm: str = "layernorm"  # "layernorm" or "rmsnorm" (a layout may impose its own: DyT)
    eps: float = 1e-5  # added to the variance (mean square) under the square root
    dropout: float = 0.0  # on the embeddings and each residual branch's output, as in GPT-2


class LayerNorm(nn.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last axis (biased var)."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.normalized_shape = (d,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        var = centred.square().mean(dim=-1, keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis: no centring, no bias."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.normalized_shape = (d,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return x / torch.sqrt(x.square().mean(dim=-1, keepdim=True) + self.eps) * self.weight


class DynamicTanh(nn.Module):
    """y = weight * tanh(alpha * x) + bias (Zhu et al. 2025): no statistics, alpha a learnable
    scalar. alpha starts at 0.5, the paper's default: a unit-scale input then stays mostly
    in tanh's near-linear range (|0.5 x| < 1 for 95% of a unit normal), squashing outliers."""

    ALPHA0 = 0.5
    stands_in_for_norm = True  # hooked where a norm would sit, without the probe (discovery)

    def __init__(self, d: int, eps: float = 0.0) -> None:
        super().__init__()
        self.normalized_shape = (d,)
        self.alpha = nn.Parameter(torch.tensor(self.ALPHA0))
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.alpha * x) * self.weight + self.bias


Norm = LayerNorm | RMSNorm | DynamicTanh
NORMS: dict[str, type[Norm]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "dyt": DynamicTanh}


def make_norm(config: RefGPTConfig) -> Norm:
    """The norm the layout imposes or the config asks for, over d_model."""
    kind = layout_named(config.layout).norm or config.norm
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, not {config.norm!r}")
    return NORMS[kind](config.d_model, config.eps)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q, k, v and output projections."""

    def __init__(self, config: RefGPTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.heads = config.heads
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape  # (batch, tokens, d_model)
        q, k, v = (
            p(x).view(B, T, self.heads, d // self.heads).transpose(1, 2)
            for p in (self.q, self.k, self.v)
        )  # (B, heads, T, head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, head_dim)
        return self.out(y.transpose(1, 2).reshape(B, T, d))  # (B, T, d)


class MLP(nn.Module):
    """fc_out(relu(fc_in(x))): ReLU, as in the paper's analysis (GPT-2 uses GELU)."""

    def __init__(self, config: RefGPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.fc_in = nn.Linear(config.d_model, hidden, bias=False)
        self.fc_out = nn.Linear(hidden, config.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(F.relu(self.fc_in(x)))


class Block(nn.Module):
    """Attention then MLP, each a residual sub-layer whose norms sit as the layout says.

    `index` is the block's position from 0; the layout's norm scale sees layer index + 1."""

    def __init__(self, config: RefGPTConfig, index: int = 0) -> None:
        super().__init__()
        self.layout: Layout = layout_named(config.layout)
        self.alpha = self.layout.residual_scale(config.layers)
        self.scale = self.layout.norm_scale(index + 1)
        self.attn, self.mlp = CausalSelfAttention(config), MLP(config)
        for name in self.layout.block_norms():
            self.add_module(name, make_norm(config))
        self.drop = nn.Dropout(config.dropout)  # on each branch's output (identity at 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self._sublayer(x, self.attn, 1)
        return self._sublayer(x, self.mlp, 2)

    def _sublayer(self, x: Tensor, branch: nn.Module, k: int) -> Tensor:
        norms = [self._scaled(self.get_submodule(f"ln_{k}{s}")) for s in self.layout.norms]
        return self.layout.sublayer(x, branch, norms, self.alpha, self.drop)

    def _scaled(self, norm: nn.Module) -> nn.Module | Callable[[Tensor], Tensor]:
        return norm if self.scale == 1 else lambda x: norm(x) * self.scale

    def norm_modules(self) -> list[nn.Module]:
        """The block's norms in the order the stream meets them."""
        return [self.get_submodule(name) for name in self.layout.block_norms()]


class GPT(nn.Module):
    """Token and position embeddings, L blocks, a final norm (if the layout has one), a head."""

    def __init__(self, config: RefGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.layers))
        # Post-LN blocks already end in a norm; pre-LN needs one before the head.
        self.ln_f = make_norm(config) if layout_named(config.layout).final else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, ids: Tensor, stream: list[Tensor] | None = None) -> Tensor:
        """Logits of shape (batch, tokens, vocab) for token ids of shape (batch, tokens).

        `stream`, if given, receives the residual stream's variance (over d, averaged over
        the tokens; a 0-d tensor, no host sync) after the embeddings and after each block."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))  # (B, T, d)
        _record(stream, x)
        for block in self.blocks:
            x = block(x)
            _record(stream, x)
        return self.head(self.ln_f(x))

    def loss(self, ids: Tensor, stream: list[Tensor] | None = None) -> Tensor:
        """Mean next-token cross-entropy of the sequences `ids` (batch, tokens)."""
        logits = self(ids[:, :-1], stream)  # (B, T-1, vocab)
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def _record(stream: list[Tensor] | None, x: Tensor) -> None:
    if stream is not None:
        stream.append(x.detach().var(dim=-1, correction=0).mean())
