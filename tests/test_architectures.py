"""Every decoder family: norms found, roles and placement, statistics and gradients exact.

Each family is a tiny random model built from its transformers config class (offline),
saved and loaded back. The expected norms are written out per family from the
architecture, not taken from discovery. Statistics are checked by recomputing every norm's
output from them, gradient norms against autograd, both through independent hooks that
keep the full tensors (tests only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lninspect import capture
from lninspect.errors import LninspectError
from lninspect.norms.discovery import NormInfo, discover, find_norms
from lninspect.norms.formula import measure_formula
from lninspect.results import NormStats, StatsResult

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 2, 32, 4, 2, 8, 128
EPS = 3e-6  # not any library's default, so that reading it from the module is tested
RTOL = 1e-5
IDS = torch.tensor([[3, 17, 42, 5, 99, 8], [1, 2, 3, 4, 5, 6]])  # (sequences, tokens)
B, T = IDS.shape

Expected = list[tuple[str, str, str]]  # (path inside the block or top-level leaf, role, placement)
PRE_LN = [("ln_1", "attn", "pre"), ("ln_2", "mlp", "pre")]
LLAMA = [("input_layernorm", "attn", "pre"), ("post_attention_layernorm", "mlp", "pre")]
PARALLEL = [("input_layernorm", "attn+mlp", "pre")]
QK = [("self_attn.q_norm", "qk", "pre"), ("self_attn.k_norm", "qk", "pre")]
SANDWICH = [
    ("input_layernorm", "attn", "pre"),
    ("post_attention_layernorm", "attn", "post"),
    ("pre_feedforward_layernorm", "mlp", "pre"),
    ("post_feedforward_layernorm", "mlp", "post"),
]
FINAL = [("norm", "final", "pre")]
LN_F = [("ln_f", "final", "pre")]


@dataclass
class Family:
    """A tiny config and the norms its architecture has (per block, then outside blocks)."""

    config: Callable[[], Any]
    per_layer: Expected
    top: Expected
    eps: float = EPS
    weight_offset: float = 0.0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per-token array shapes

    @property
    def count(self) -> int:
        return LAYERS * len(self.per_layer) + len(self.top)


def _t():
    import transformers

    return transformers


def _decoder(cls: str, **extra: Any) -> Callable[[], Any]:
    """A LLaMA-style config: num_hidden_layers, hidden_size, ... (most families)."""
    shape = dict(
        num_hidden_layers=LAYERS,
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return lambda: getattr(_t(), cls)(**{**shape, **extra})


def _gpt2_style(cls: str, **extra: Any) -> Callable[[], Any]:
    shape = dict(
        n_layer=LAYERS,
        n_embd=HIDDEN,
        n_head=HEADS,
        vocab_size=VOCAB,
        n_positions=64,
        layer_norm_epsilon=EPS,
    )
    return lambda: getattr(_t(), cls)(**{**shape, **extra})


GQA = dict(num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, rms_norm_eps=EPS)
STABLELM_QK = [
    *[(f"self_attn.q_layernorm.norms.{h}", "qk", "pre") for h in range(HEADS)],
    *[(f"self_attn.k_layernorm.norms.{h}", "qk", "pre") for h in range(KV_HEADS)],
]
FAMILIES = {
    "gpt2": Family(_gpt2_style("GPT2Config"), PRE_LN, LN_F),
    "gpt_neo": Family(
        lambda: _t().GPTNeoConfig(
            num_layers=LAYERS,
            hidden_size=HIDDEN,
            num_heads=HEADS,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            attention_types=[[["global", "local"], 1]],
            window_size=4,
            layer_norm_epsilon=EPS,
        ),
        PRE_LN,
        LN_F,
    ),
    "gptj": Family(_gpt2_style("GPTJConfig", rotary_dim=4), [("ln_1", "attn+mlp", "pre")], LN_F),
    "gpt_neox": Family(
        _decoder("GPTNeoXConfig", layer_norm_eps=EPS), LLAMA, [("final_layer_norm", "final", "pre")]
    ),
    "opt": Family(
        lambda: _t().OPTConfig(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            num_attention_heads=HEADS,
            ffn_dim=64,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            word_embed_proj_dim=HIDDEN,
        ),
        [("self_attn_layer_norm", "attn", "pre"), ("final_layer_norm", "mlp", "pre")],
        [("final_layer_norm", "final", "pre")],
        eps=1e-5,
    ),  # nn.LayerNorm's default
    "opt_post_ln": Family(
        lambda: _t().OPTConfig(  # OPT-350m: the original post-LN order
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            num_attention_heads=HEADS,
            ffn_dim=64,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            word_embed_proj_dim=HIDDEN,
            do_layer_norm_before=False,
        ),
        [("self_attn_layer_norm", "attn", "post"), ("final_layer_norm", "mlp", "post")],
        [],
        eps=1e-5,
    ),
    "bloom": Family(
        lambda: _t().BloomConfig(
            n_layer=LAYERS,
            hidden_size=HIDDEN,
            n_head=HEADS,
            vocab_size=VOCAB,
            layer_norm_epsilon=EPS,
        ),
        LLAMA,
        [("word_embeddings_layernorm", "embed", "post"), ("ln_f", "final", "pre")],
    ),
    "falcon": Family(
        lambda: _t().FalconConfig(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            num_attention_heads=HEADS,
            vocab_size=VOCAB,
            layer_norm_epsilon=EPS,
        ),
        PARALLEL,
        LN_F,
    ),
    "falcon_new_arch": Family(
        lambda: _t().FalconConfig(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            num_attention_heads=HEADS,
            vocab_size=VOCAB,
            layer_norm_epsilon=EPS,
            new_decoder_architecture=True,
            num_kv_heads=KV_HEADS,
        ),
        [("ln_attn", "attn", "pre"), ("ln_mlp", "mlp", "pre")],
        LN_F,
    ),
    "phi": Family(
        _decoder("PhiConfig", layer_norm_eps=EPS), PARALLEL, [("final_layernorm", "final", "pre")]
    ),
    "phi3": Family(_decoder("Phi3Config", rms_norm_eps=EPS, pad_token_id=0), LLAMA, FINAL),
    "llama": Family(_decoder("LlamaConfig", **GQA), LLAMA, FINAL),
    "mistral": Family(_decoder("MistralConfig", **GQA), LLAMA, FINAL),
    "qwen2": Family(
        _decoder("Qwen2Config", num_key_value_heads=KV_HEADS, rms_norm_eps=EPS), LLAMA, FINAL
    ),
    "qwen3": Family(
        _decoder("Qwen3Config", **GQA),
        QK + LLAMA,
        FINAL,
        shapes={"self_attn.q_norm": (B, T, HEADS), "self_attn.k_norm": (B, T, KV_HEADS)},
    ),
    "gemma": Family(_decoder("GemmaConfig", **GQA), LLAMA, FINAL, weight_offset=1.0),
    "gemma2": Family(_decoder("Gemma2Config", **GQA), SANDWICH, FINAL, weight_offset=1.0),
    "gemma3": Family(
        _decoder("Gemma3TextConfig", **GQA),
        QK + SANDWICH,
        FINAL,
        weight_offset=1.0,
        shapes={"self_attn.q_norm": (B, HEADS, T)},
    ),  # after
    # the transpose to (batch, heads, tokens, head_dim)
    "olmo": Family(_decoder("OlmoConfig"), LLAMA, FINAL, eps=1e-5),  # eps only in the code
    "olmo2": Family(
        _decoder("Olmo2Config", rms_norm_eps=EPS),
        [
            *QK,
            ("post_attention_layernorm", "attn", "post"),
            ("post_feedforward_layernorm", "mlp", "post"),
        ],
        FINAL,
        shapes={"self_attn.q_norm": (B, T)},
    ),  # over the whole q projection
    "gpt_bigcode": Family(_gpt2_style("GPTBigCodeConfig"), PRE_LN, LN_F),
    "stablelm": Family(
        _decoder(
            "StableLmConfig", num_key_value_heads=KV_HEADS, layer_norm_eps=EPS, qk_layernorm=True
        ),
        STABLELM_QK + LLAMA,
        FINAL,
        shapes={"self_attn.q_layernorm.norms.0": (B, 1, T)},
    ),  # one head's slice
    "cohere": Family(
        _decoder("CohereConfig", layer_norm_eps=EPS, use_qk_norm=True),
        QK + PARALLEL,
        FINAL,
        shapes={"self_attn.q_norm": (B, T, HEADS)},
    ),
}


def rel_err(got: np.ndarray | torch.Tensor, want: torch.Tensor) -> float:
    got = (
        torch.as_tensor(np.asarray(got, dtype=np.float64))
        if not isinstance(got, torch.Tensor)
        else got.detach().double()
    )
    want = want.detach().double()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


class FullTensors:
    """Independent hooks that keep each norm's full input and output, with their gradients."""

    def __init__(self, norms: list[NormInfo]) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for info in norms:  # prepend: see x before capture's alias replaces it
            self.handles.append(
                info.module.register_forward_pre_hook(
                    self._keep(self.inputs, info.name, lambda args: args[0]), prepend=True
                )
            )
            self.handles.append(
                info.module.register_forward_hook(
                    self._keep(self.outputs, info.name, lambda out: out)
                )
            )

    def _keep(self, store: dict[str, torch.Tensor], name: str, pick: Callable) -> Callable:
        def hook(module: nn.Module, args: tuple, *output: Any) -> None:
            tensor = pick(output[0] if output else args)
            if tensor.requires_grad:
                tensor.retain_grad()
            store[name] = tensor

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def build(family: Family, path: Path) -> nn.Module:
    """A tiny random model with perturbed norm weights, saved and loaded back in float32."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(family.config())
    with torch.no_grad():  # non-trivial norm weights, so that the affine step is tested
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                for param in module.parameters(recurse=False):
                    param.add_(0.3 * torch.randn_like(param))
    model.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def inner_path(norm: NormInfo) -> str:
    """`model.layers.0.self_attn.q_norm` -> `self_attn.q_norm`; `transformer.ln_f` -> `ln_f`."""
    parts = norm.name.split(".")
    if norm.layer is None:
        return parts[-1]
    return ".".join(parts[parts.index(str(norm.layer)) + 1 :])


def found_layout(norms: list[NormInfo]) -> set[tuple[int | None, str, str, str]]:
    """(layer, path inside the block or top-level leaf, role, placement) of each norm."""
    return {(n.layer, inner_path(n), n.role, n.placement) for n in norms}


def run_with_grads(
    model: nn.Module, norms: list[NormInfo], ids: torch.Tensor, **kwargs: Any
) -> tuple[StatsResult, FullTensors]:
    full = FullTensors(norms)
    try:
        with capture(model, norms, grads=True) as cap:
            out = model(ids, labels=ids, **kwargs)
            loss = out.loss if hasattr(out, "loss") else out
            loss.backward()
    finally:
        full.close()
    return cap.result(), full


def check_exact(result: StatsResult, full: FullTensors, norms: list[NormInfo]) -> None:
    """Outputs recomputed from the statistics, and gradient norms, against the real ones."""
    for info in norms:
        stats, x, y = result.norm(info.name), full.inputs[info.name], full.outputs[info.name]
        d = info.reduced_dims
        assert stats.calls == 1
        assert stats.input.mean.shape == tuple(x.shape[:-d]), info.name  # heads kept
        assert rel_err(recompute(info, stats, x), y) < RTOL, info.name

        assert rel_err(stats.grad.output_norm, token_norms(y.grad, d)) < RTOL, info.name
        assert rel_err(stats.grad.residual_norm, token_norms(x.grad, d)) < RTOL, info.name
        # dL/dx through the norm alone: the norm's vector-Jacobian product with dL/dy, on a
        # fresh graph (the model's graph still carries capture's tensor hooks)
        fresh = x.detach().clone().requires_grad_()
        through = torch.autograd.grad(info.module(fresh), fresh, grad_outputs=y.grad)[0]
        assert rel_err(stats.grad.input_norm, token_norms(through, d)) < RTOL, info.name


def recompute(info: NormInfo, stats: NormStats, x: torch.Tensor) -> torch.Tensor:
    """y from x, the captured per-token mean and std (or rms), and the effective weight."""
    xs = x.detach().double().flatten(-info.reduced_dims)  # (..., hidden)
    per_token = lambda a: torch.from_numpy(a).double()[..., None]  # noqa: E731
    if info.kind == "layernorm":
        z = (xs - per_token(stats.input.mean)) / per_token(stats.input.std)
    else:
        z = xs / per_token(stats.input.rms)
    weight, bias = info.effective_weight(), getattr(info.module, "bias", None)
    y = z.reshape(x.shape) * (weight.double() if weight is not None else 1.0)
    return y + bias.detach().double() if isinstance(bias, torch.Tensor) else y


def token_norms(g: torch.Tensor, dims: int) -> torch.Tensor:
    """The L2 norm over the `dims` trailing axes, in float64."""
    return torch.linalg.vector_norm(g.double().flatten(-dims), dim=-1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, nn.Module]]:
    """Each family built, saved and loaded once per test module."""
    cache: dict[str, tuple[Path, nn.Module]] = {}

    def get(name: str) -> tuple[Path, nn.Module]:
        if name not in cache:
            path = tmp_path_factory.mktemp(name)
            cache[name] = path, build(FAMILIES[name], path)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family(name: str, saved: Callable) -> None:
    family = FAMILIES[name]
    _, model = saved(name)
    found = discover(model)
    norms = found.norms
    assert found.notes == []  # a tested architecture: no generic-discovery note
    assert len(norms) == family.count
    expected = {(layer, *row) for layer in range(LAYERS) for row in family.per_layer}
    expected |= {(None, *row) for row in family.top}
    assert found_layout(norms) == expected
    for info in norms:
        assert info.eps == pytest.approx(family.eps, rel=1e-3) and info.eps_known, info.name
        assert info.weight_offset == family.weight_offset, info.name

    result, full = run_with_grads(model, norms, IDS, use_cache=False)
    check_exact(result, full, norms)
    for inner, shape in family.shapes.items():
        (info,) = [n for n in norms if n.layer == 0 and inner_path(n) == inner]
        assert result.norm(info.name).input.mean.shape == shape
    back = StatsResult.from_json(result.to_json())
    assert [(n.kind, n.role, n.placement, n.reads) for n in back.norms] == [
        (n.kind, n.role, n.placement, n.reads) for n in norms
    ]
    for info in norms:  # what each norm reads: a post norm of a post-LN stack reads x + f(x),
        # Gemma's and OLMo 2's their sub-layer's output
        sublayer = info.placement == "post" and not name.endswith("post_ln")
        post = "sublayer" if sublayer else "residual"
        want = {"qk": "projection", "embed": "embedding"}.get(info.role, post)
        assert info.reads == want, info.name
        heads = result.norm(info.name).input.mean.ndim > 2
        assert (result.norm(info.name).token_axis is not None) == heads, info.name


@pytest.mark.parametrize("name", ["gemma2", "stablelm", "bloom"])
def test_norms_command_prints_the_tree(name: str, saved: Callable) -> None:
    import json

    from typer.testing import CliRunner

    from lninspect.cli import app

    path, _ = saved(name)
    env = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    shown = CliRunner().invoke(app, ["norms", str(path), "--device", "cpu"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "placement" in shown.stdout and "final" in shown.stdout.split()  # short names
    doc = json.loads(
        CliRunner()
        .invoke(app, ["norms", str(path), "--device", "cpu", "--json", "-"], env=env)
        .stdout
    )
    assert len(doc["norms"]) == FAMILIES[name].count
    assert {d["placement"] for d in doc["norms"]} <= {"pre", "post"}
    assert all(d["kind"] in ("layernorm", "rmsnorm") for d in doc["norms"])


# An architecture lninspect has never seen -------------------------------------------------


class MyFancyRMSNorm(nn.Module):
    """An RMSNorm that keeps its eps under a name discovery cannot know."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.3 * torch.randn(d))
        self._tiny = 3e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self._tiny) * self.weight


class FancyAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.mix = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # causal running mean over tokens
        weights = torch.tril(torch.ones(x.shape[1], x.shape[1]))
        return self.mix(weights / weights.sum(-1, keepdim=True) @ x)


class Stage(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.pre_mix, self.token_mixer = MyFancyRMSNorm(d), FancyAttention(d)
        self.pre_channel, self.channel_ffn = (
            MyFancyRMSNorm(d),
            nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(self.pre_mix(x))
        return x + self.channel_ffn(self.pre_channel(x))


class FancyLM(nn.Module):
    def __init__(self, vocab: int = 64, d: int = 16, stages: int = 2) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, model_type="fancy")
        self.embed = nn.Embedding(vocab, d)
        self.trunk = nn.ModuleDict(
            {
                "stages": nn.ModuleList(Stage(d) for _ in range(stages)),
                "out_norm": MyFancyRMSNorm(d),
            }
        )
        self.unembed = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        x = self.embed(ids)
        for stage in self.trunk["stages"]:
            x = stage(x)
        logits = self.unembed(self.trunk["out_norm"](x))
        if labels is None:
            return logits
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def test_unknown_architecture_works_with_a_note() -> None:
    torch.manual_seed(0)
    model = FancyLM()
    found = discover(model)
    assert len(found.notes) == 1 and "generic discovery" in found.notes[0]
    assert "probe forward pass" in found.notes[0]
    assert [(n.layer, n.role, n.placement, n.kind) for n in found.norms] == [
        (0, "attn", "pre", "rmsnorm"),
        (0, "mlp", "pre", "rmsnorm"),
        (1, "attn", "pre", "rmsnorm"),
        (1, "mlp", "pre", "rmsnorm"),
        (None, "final", "pre", "rmsnorm"),
    ]
    assert all(n.eps == pytest.approx(3e-6, rel=1e-2) and n.eps_known for n in found.norms)
    result, full = run_with_grads(model, found.norms, IDS % 64)
    check_exact(result, full, found.norms)


def test_without_a_config_roles_come_from_names() -> None:
    model = FancyLM()
    model.config = None
    found = discover(model)
    assert len(found.norms) == 5
    assert len(found.notes) == 1 and "guessed from module names" in found.notes[0]


def test_probe_reads_behaviour_not_names() -> None:
    class T5StyleLayerNorm(nn.Module):  # called LayerNorm, computes RMSNorm times 1 + w
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(0.2 * torch.randn(8))
            self.eps = 1e-6

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / (x.square().mean(-1, keepdim=True) + self.eps).sqrt() * (1 + self.weight)

    formula = measure_formula(T5StyleLayerNorm(), 1e-6, None)
    assert formula is not None
    assert (formula.kind, formula.weight_offset, formula.reduced_dims) == ("rmsnorm", 1.0, 1)
    info = find_norms(nn.Sequential(T5StyleLayerNorm()))[0]
    assert info.kind == "rmsnorm" and info.weight_offset == 1.0


def _fake_load(model: nn.Module) -> Callable:
    from lninspect.model.loading import LoadedModel
    from lninspect.model.tokenizer import Tokenizer
    from lninspect.results import ModelInfo

    info = ModelInfo(
        name="fake", source="module", cls=type(model).__name__, dtype="float32", device="cpu"
    )
    return lambda *args, **kwargs: LoadedModel(
        model=model, tokenizer=Tokenizer(None), info=info, context=None
    )


def test_model_without_norms_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lninspect import jobs
    from lninspect.options import RunOptions

    monkeypatch.setattr(jobs, "load_model", _fake_load(nn.Sequential(nn.Embedding(8, 4))))
    with pytest.raises(LninspectError, match="no normalization module"):
        jobs.describe_norms(RunOptions(model="fake"))


def test_jobs_pass_the_discovery_note_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from lninspect import jobs
    from lninspect.options import RunOptions

    monkeypatch.setattr(jobs, "load_model", _fake_load(FancyLM()))
    result = jobs.describe_norms(RunOptions(model="fake"))
    assert any("generic discovery" in note for note in result.notes)
    assert [n.placement for n in result.norms] == ["pre"] * 5
