"""The reference GPT: norms written from their formulas, every layout's discovery, causality.
Each layout's forward against an independent float64 one is in tests/test_layouts.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from lninspect.norms.discovery import find_norms
from lninspect.placement.layouts import LAYOUTS, SUBLAYERS
from lninspect.placement.refgpt import GPT, DynamicTanh, LayerNorm, RefGPTConfig, RMSNorm

TINY = RefGPTConfig(vocab_size=64, context=16, layers=2, d_model=32, heads=4)


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial gains (and biases), so the affine step is really compared."""
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(1.0 + 0.5 * torch.randn(param.shape, generator=generator))


def _input(generator: torch.Generator) -> torch.Tensor:
    # An offset and a spread far from (0, 1), as in a residual stream.
    return (3.0 + 5.0 * torch.randn(2, 7, 32, generator=generator)).requires_grad_()


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (LayerNorm(32, eps=1e-5), nn.LayerNorm(32, eps=1e-5)),
        (RMSNorm(32, eps=1e-6), nn.RMSNorm(32, eps=1e-6)),
    ],
)
def test_norm_from_formula_equals_torch(ours: nn.Module, theirs: nn.Module):
    generator = torch.Generator().manual_seed(0)
    _randomise(ours, generator)
    theirs.load_state_dict(ours.state_dict())
    x = _input(generator)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
    # The backward passes agree too: what the placement experiment measures.
    upstream = torch.randn(y_ours.shape, generator=generator)
    grads_ours = torch.autograd.grad(y_ours, [x, ours.weight], upstream)
    grads_theirs = torch.autograd.grad(y_theirs, [x, theirs.weight], upstream)
    for a, b in zip(grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("placement", ["pre", "post"])
def test_discovery_finds_every_norm_with_layer_and_role(placement: str, norm: str):
    model = GPT(replace(TINY, layout=placement, norm=norm))
    found = find_norms(model)
    expected = ["blocks.0.ln_1", "blocks.0.ln_2", "blocks.1.ln_1", "blocks.1.ln_2"]
    expected += ["ln_f"] if placement == "pre" else []
    assert [n.name for n in found] == expected
    assert [n.role for n in found] == ["attn", "mlp", "attn", "mlp", "final"][: len(found)]
    assert [n.layer for n in found[:4]] == [0, 0, 1, 1]
    assert {n.kind for n in found} == {norm}
    assert all(n.eps_known and n.eps == TINY.eps for n in found)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_discovery_reads_what_each_layout_declares(name: str):
    """Every declared norm is found, where the declaration puts it and reading what it says."""
    layout = LAYOUTS[name]
    found = find_norms(GPT(replace(TINY, layout=name)), include=(DynamicTanh,))
    names = [f"blocks.{i}.{key}" for i in range(TINY.layers) for key in layout.block_norms()]
    assert [n.name for n in found] == names + (["ln_f"] if layout.final else [])
    reads = [r for _ in range(TINY.layers * len(SUBLAYERS)) for r in layout.reads]
    assert [n.reads for n in found[: len(names)]] == reads


def test_post_ln_blocks_end_normalised_and_pre_ln_blocks_do_not():
    torch.manual_seed(0)
    ids = torch.randint(TINY.vocab_size, (2, 16))
    for placement in ("pre", "post"):
        model = GPT(replace(TINY, layout=placement))
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(16))
        out = model.blocks[0](x)  # (2, 16, d)
        var, mean = torch.var_mean(out, dim=-1, correction=0)
        normalised = torch.allclose(var, torch.ones_like(var), atol=1e-3)
        assert normalised == (placement == "post")
        if placement == "post":
            torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)


@pytest.mark.parametrize("placement", list(LAYOUTS))
def test_logits_are_causal_and_loss_is_next_token(placement: str):
    torch.manual_seed(0)
    model = GPT(replace(TINY, layout=placement))
    ids = torch.randint(TINY.vocab_size, (1, 12))
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % TINY.vocab_size
    logits, logits_changed = model(ids), model(changed)
    assert logits.shape == (1, 12, TINY.vocab_size)
    torch.testing.assert_close(logits[:, :8], logits_changed[:, :8])
    assert not torch.allclose(logits[:, 8:], logits_changed[:, 8:])
    expected = nn.functional.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:])
    torch.testing.assert_close(model.loss(ids), expected)


def test_bad_placement_or_norm_is_refused():
    with pytest.raises(ValueError, match="layout must be one of pre, post"):
        GPT(replace(TINY, layout="sandwich"))
    with pytest.raises(ValueError, match="norm"):
        GPT(replace(TINY, norm="batchnorm"))


@pytest.mark.parametrize("placement", list(LAYOUTS))
def test_dropout_acts_in_training_only_and_on_embeddings_and_branches(placement: str):
    model = GPT(replace(TINY, layout=placement, dropout=0.5))
    drops = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert drops == ["drop", "blocks.0.drop", "blocks.1.drop"]
    ids = torch.randint(TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    model.eval()
    plain = GPT(replace(TINY, layout=placement))
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(ids), plain(ids))  # eval mode: dropout is the identity
    model.train()
    torch.manual_seed(1)
    first = model(ids)
    torch.manual_seed(1)
    torch.testing.assert_close(model(ids), first)  # the masks come from torch's seed
    assert not torch.allclose(first, plain(ids))
