"""Every norm layout against a forward written here from its paper's formula (float64, plain
tensor arithmetic, reading only the model's weights), and DeepNorm's and DyT's initializations
against their papers' formulas. A new layout adds its formula to FORMULAS."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from lninspect.placement.experiment import build_model
from lninspect.placement.layouts import LAYOUTS
from lninspect.results.placement import PlacementConfig

CONFIG = PlacementConfig(layers=[3], d_model=16, heads=2, seq_len=12, batch=2, vocab_size=50)
T = torch.Tensor


def layer_norm(x: T, p: dict[str, T], prefix: str) -> T:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * p[f"{prefix}.weight"] + p[f"{prefix}.bias"]


def dyt(x: T, p: dict[str, T], prefix: str) -> T:
    """Zhu et al. 2025, Eq. 1: DyT(x) = gamma * tanh(alpha x) + beta."""
    return p[f"{prefix}.weight"] * torch.tanh(p[f"{prefix}.alpha"] * x) + p[f"{prefix}.bias"]


def attention(x: T, p: dict[str, T], block: str, heads: int) -> T:
    B, S, d = x.shape
    q, k, v = (
        (x @ p[f"{block}.attn.{n}.weight"].T).view(B, S, heads, d // heads).transpose(1, 2)
        for n in "qkv"
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    future = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(B, S, d)
    return y @ p[f"{block}.attn.out.weight"].T


def mlp(x: T, p: dict[str, T], block: str) -> T:
    hidden = torch.clamp(x @ p[f"{block}.mlp.fc_in.weight"].T, min=0)
    return hidden @ p[f"{block}.mlp.fc_out.weight"].T


Sub = Callable[[T], T]
Norm = Callable[[T, str], T]


def pre(x: T, f: Sub, n: Norm, b: str, k: int, i: int, layers: int) -> T:
    return x + f(n(x, f"{b}.ln_{k}"))


def post(x: T, f: Sub, n: Norm, b: str, k: int, i: int, layers: int) -> T:
    return n(x + f(x), f"{b}.ln_{k}")


def peri(x: T, f: Sub, n: Norm, b: str, k: int, i: int, layers: int) -> T:
    """Kim et al. 2025 (Gemma 2/3): y = x + Norm(F(Norm(x)))."""
    return x + n(f(n(x, f"{b}.ln_{k}")), f"{b}.ln_{k}_post")


def deepnorm(x: T, f: Sub, n: Norm, b: str, k: int, i: int, layers: int) -> T:
    """Wang et al. 2022: x_{l+1} = LN(alpha x_l + G(x_l)), alpha = (2N)^(1/4) decoder-only."""
    return n((2 * layers) ** 0.25 * x + f(x), f"{b}.ln_{k}")


def lns(x: T, f: Sub, n: Norm, b: str, k: int, i: int, layers: int) -> T:
    """Sun et al. 2025: pre-LN with LN(x) scaled by 1/sqrt(l), l = i + 1."""
    return x + f(n(x, f"{b}.ln_{k}") / math.sqrt(i + 1))


# name -> (one sub-layer, the norm's formula, a final norm before the head)
FORMULAS: dict[str, tuple[Callable[..., T], Callable[[T, dict[str, T], str], T], bool]] = {
    "pre": (pre, layer_norm, True),
    "post": (post, layer_norm, False),
    "peri": (peri, layer_norm, True),
    "deepnorm": (deepnorm, layer_norm, False),
    "lns": (lns, layer_norm, True),
    "dyt": (pre, dyt, True),
}


def reference_logits(name: str, p: dict[str, T], ids: T, layers: int, heads: int) -> T:
    sublayer, norm_formula, final = FORMULAS[name]

    def norm(x: T, prefix: str) -> T:
        return norm_formula(x, p, prefix)

    x = p["tok_emb.weight"][ids] + p["pos_emb.weight"][: ids.shape[1]]
    for i in range(layers):
        b = f"blocks.{i}"
        x = sublayer(x, lambda h, b=b: attention(h, p, b, heads), norm, b, 1, i, layers)
        x = sublayer(x, lambda h, b=b: mlp(h, p, b), norm, b, 2, i, layers)
    return (norm(x, "ln_f") if final else x) @ p["head.weight"].T


def test_every_layout_has_a_formula_here():
    assert set(FORMULAS) == set(LAYOUTS)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_forward_matches_the_papers_formula_in_float64(name: str):
    model = build_model(CONFIG, name, 3, torch.Generator().manual_seed(0)).double()
    with torch.no_grad():  # gains and biases away from 1 and 0, so each is really used
        for key, param in model.named_parameters():
            if ".ln_" in key or key.startswith("ln_f"):
                param.add_(0.3 * torch.randn(param.shape, generator=torch.Generator()))
    params = {k: v.detach() for k, v in model.named_parameters()}
    ids = torch.randint(50, (2, 12), generator=torch.Generator().manual_seed(1))
    expected = reference_logits(name, params, ids, 3, CONFIG.heads)
    torch.testing.assert_close(model(ids).detach(), expected, rtol=1e-10, atol=1e-10)


def _std(weight: T) -> float:
    return float(weight.detach().double().std())


@pytest.mark.parametrize("layers", [4, 24])
def test_deepnorm_init_is_xavier_with_gain_beta_on_v_out_and_mlp(layers: int):
    """Wang et al. 2022, decoder-only: beta = (8N)^(-1/4) on v, out, fc_in, fc_out; q, k 1."""
    config = replace(CONFIG, d_model=128, heads=2, layers=[layers])
    model = build_model(config, "deepnorm", layers, torch.Generator().manual_seed(0))
    xavier = math.sqrt(2 / (128 + 128))
    beta = (8 * layers) ** -0.25
    block = model.blocks[layers - 1]
    for name in ("attn.v", "attn.out", "mlp.fc_in", "mlp.fc_out"):
        weight = block.get_submodule(name).weight
        assert _std(weight) == pytest.approx(beta * xavier, rel=0.03), name
    for name in ("attn.q", "attn.k"):
        assert _std(block.get_submodule(name).weight) == pytest.approx(xavier, rel=0.03)
    assert block.alpha == pytest.approx((2 * layers) ** 0.25)


def test_dyt_starts_at_alpha_half_gain_one_bias_zero():
    """Zhu et al. 2025: alpha_0 = 0.5, gamma all-ones, beta all-zeros."""
    model = build_model(CONFIG, "dyt", 3, torch.Generator().manual_seed(0))
    norms = [m for n, m in model.named_modules() if n.endswith(("ln_1", "ln_2", "ln_f"))]
    assert len(norms) == 7
    for norm in norms:
        assert norm.alpha.item() == 0.5 and norm.alpha.shape == ()
        assert torch.equal(norm.weight, torch.ones(16))
        assert torch.equal(norm.bias, torch.zeros(16))


def test_layouts_share_the_seeds_draws_where_no_gain_differs():
    """The paired comparison: every layout of a seed starts from the same weights."""
    models = {n: build_model(CONFIG, n, 3, torch.Generator().manual_seed(0)) for n in LAYOUTS}
    weight = "blocks.2.attn.q.weight"
    for model in models.values():
        torch.testing.assert_close(
            model.get_parameter(weight), models["pre"].get_parameter(weight), rtol=0, atol=0
        )
