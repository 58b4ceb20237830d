"""The statistics of a hand-written GPT block, through lninspect's Python API.

The block puts a LayerNorm before attention and before the MLP (pre-LN, as in GPT-2);
the first one is the user's own class without affine parameters, written from the formula.
lninspect finds both (any leaf module whose class name ends in LayerNorm counts) and
reports per-token statistics without keeping a single activation.

    .venv/bin/python examples/gpt_block.py
"""

from __future__ import annotations

import textwrap

import torch
from rich.console import Console
from torch import nn

from lninspect import capture
from lninspect.render.stats_tables import stats_table


class PlainLayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps): LayerNorm with no gain and no bias."""

    def __init__(self, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).square().mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.epsilon)


class Block(nn.Module):
    """One pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, d_model: int = 64, n_head: int = 4) -> None:
        super().__init__()
        self.ln_1 = PlainLayerNorm()
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_model)
        T = x.shape[1]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def main() -> None:
    torch.manual_seed(0)
    block = Block()
    x = torch.randn(2, 16, 64) * 3.0
    x[:, 5, 7] = 80.0  # a planted spike: token 5, dimension 7
    with torch.no_grad(), capture(block) as cap:
        block(x)
    result = cap.result()
    Console(width=80).print(stats_table(result))  # the width of a pipe or a file
    ln_1 = result.norm("ln_1")
    stds = " ".join(f"{v:.2f}" for v in ln_1.input.std[0])
    print("per-token std at ln_1, sequence 0:", *textwrap.wrap(stds, 78), sep="\n  ")
    print(
        "largest |x| at ln_1:", ln_1.input.absmax.max(), "in dimension", ln_1.input.absmax_dim[0, 5]
    )


if __name__ == "__main__":
    main()
