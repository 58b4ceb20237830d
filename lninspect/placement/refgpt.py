"""A small reference GPT whose norm placement is a switch: pre-LN (GPT-2) or post-LN.

    pre:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x));  ...;  logits = head(ln_f(x))
    post: x = ln_1(x + attn(x));  x = ln_2(x + mlp(x));  ...;  logits = head(x)

With `dropout` > 0 (training), dropout acts on the embeddings and on the output of every
attention and MLP branch before it joins the residual stream, as GPT-2's resid_pdrop does.

The norms are written from their formulas; their class names end in LayerNorm / RMSNorm
so that lninspect's discovery finds them, and they are named `blocks.{i}.ln_1`,
`blocks.{i}.ln_2` and `ln_f` as in GPT-2. Initialization is left to the caller
(lninspect.placement.experiment); PyTorch's defaults apply until then.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


@dataclass(frozen=True)
class RefGPTConfig:
    vocab_size: int = 2048  # token ids are 0 .. vocab_size - 1
    context: int = 128  # longest sequence: rows of the position embedding
    layers: int = 12  # number of blocks, L
    d_model: int = 256  # width d of the residual stream
    heads: int = 4  # attention heads; d_model must be divisible by it
    mlp_ratio: int = 1  # FFN hidden width / d: 1 as in the paper's analysis, 4 in GPT-2
    placement: str = "pre"  # "pre": norm inside the residual branch; "post": after the addition
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
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


def make_norm(config: RefGPTConfig) -> LayerNorm | RMSNorm:
    """The norm the config asks for, over d_model."""
    norms: dict[str, type[LayerNorm] | type[RMSNorm]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}
    if config.norm not in norms:
        raise ValueError(f"norm must be one of {sorted(norms)}, not {config.norm!r}")
    return norms[config.norm](config.d_model, config.eps)


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
    """Attention then MLP, each with a residual connection and a norm placed pre or post."""

    def __init__(self, config: RefGPTConfig) -> None:
        super().__init__()
        if config.placement not in ("pre", "post"):
            raise ValueError(f"placement must be 'pre' or 'post', not {config.placement!r}")
        self.placement = config.placement
        self.ln_1, self.attn = make_norm(config), CausalSelfAttention(config)
        self.ln_2, self.mlp = make_norm(config), MLP(config)
        self.drop = nn.Dropout(config.dropout)  # on each branch's output (identity at 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.placement == "pre":
            x = x + self.drop(self.attn(self.ln_1(x)))
            return x + self.drop(self.mlp(self.ln_2(x)))
        x = self.ln_1(x + self.drop(self.attn(x)))
        return self.ln_2(x + self.drop(self.mlp(x)))


class GPT(nn.Module):
    """Token and position embeddings, L blocks, a final norm (pre-LN only), an LM head."""

    def __init__(self, config: RefGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        # Post-LN blocks already end in a norm; pre-LN needs one before the head.
        self.ln_f = make_norm(config) if config.placement == "pre" else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits of shape (batch, tokens, vocab) for token ids of shape (batch, tokens)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, ids: Tensor) -> Tensor:
        """Mean next-token cross-entropy of the sequences `ids` (batch, tokens)."""
        logits = self(ids[:, :-1])  # (B, T-1, vocab)
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
