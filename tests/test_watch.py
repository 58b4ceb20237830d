"""`lninspect.watch` in a plain loop: its records against an independent recomputation, no
hook between recording steps, evaluation passes kept out, gradient checkpointing counted
once, the fixed probe, and the log's writers and reader."""

from __future__ import annotations

import copy
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lninspect
from lninspect.errors import LninspectError
from lninspect.hooks.params import param_group
from lninspect.norms.discovery import find_norms
from lninspect.norms.placing import layer_index
from lninspect.placement.refgpt import GPT, RefGPTConfig
from lninspect.results.watch import LOG_NAME, WATCH_SCHEMA, WatchRecord, read_log
from lninspect.trends import quantiles, quantiles_of_each, sorted_quantiles
from tests.conftest import tiny_gpt2

QS = (0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
KEYS = ("q05", "q25", "q50", "q75", "q95", "max")


def ref_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(RefGPTConfig(vocab_size=64, context=32, layers=3, d_model=32, heads=2))


def batches(n: int, seed: int = 1, shape: tuple[int, int] = (4, 16)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, shape, generator=generator) for _ in range(n)]


class Reference:
    """Keeps every norm's x and dL/dy of one step (full tensors), and every param's grad."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.x: dict[str, torch.Tensor] = {}
        self.y: dict[str, torch.Tensor] = {}
        self.handles = []
        for info in find_norms(model):
            self.handles.append(info.module.register_forward_hook(self._keep(info.name)))

    def _keep(self, name: str):
        def hook(module, args, output):
            self.x[name] = args[0].detach().clone()
            if output.requires_grad:
                output.retain_grad()
            self.y[name] = output

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def norm_stats(self, name: str) -> dict[str, np.ndarray]:
        """float64 recomputation: std, output std, |dL/dx through the norm| / |dL/dy|, absmax."""
        module = self.model.get_submodule(name)
        x = self.x[name].double()
        y = self.y[name]
        std = torch.sqrt(x.var(-1, unbiased=False) + module.eps)
        x_in = self.x[name].clone().requires_grad_()
        (through,) = torch.autograd.grad(module(x_in), x_in, y.grad)  # dL/dx via the norm alone
        scale = through.double().norm(dim=-1) / y.grad.double().norm(dim=-1)
        absmax = x.abs().amax(-1)
        flat = int(absmax.argmax())
        return {
            "input_denominator": std.numpy(),
            "output_std": y.detach().double().std(-1, unbiased=False).numpy(),
            "grad_scale": scale.numpy(),
            "absmax": float(absmax.max()),
            "absmax_dim": int(x.abs().reshape(-1, x.shape[-1])[flat].argmax()),
        }

    def param_groups(self) -> dict[tuple[int | None, str], float]:
        names = {n.name for n in find_norms(self.model)}
        squares: dict[tuple[int | None, str], float] = {}
        for name, p in self.model.named_parameters():
            key = (layer_index(name), param_group(name, self.model, names))
            squares[key] = squares.get(key, 0.0) + float(p.grad.double().norm() ** 2)
        return {k: math.sqrt(v) for k, v in squares.items()}


def assert_quantiles(got: dict, values: np.ndarray, rtol: float = 1e-5) -> None:
    want = np.quantile(values[np.isfinite(values)].ravel(), QS)
    np.testing.assert_allclose([got[k] for k in KEYS], want, rtol=rtol)


@pytest.mark.parametrize("reductions", ["auto", "compiled"])  # auto: eager on the CPU
def test_records_equal_an_independent_recomputation(tmp_path: Path, reductions: str):
    model, data = ref_gpt(), batches(5)
    twin = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-3)
    references = {}
    options = {"optimizer": opt, "reductions": reductions}
    with lninspect.watch(model, every=2, log_dir=tmp_path, **options) as w:
        for step, ids in enumerate(data):
            loss = model.loss(ids)
            loss.backward()
            opt.step()
            opt.zero_grad()
            w.step(loss=loss)
            ref = Reference(twin)  # the same step on a twin, recorded in full
            twin.loss(ids).backward()
            ref.close()
            if step % 2 == 0:
                references[step] = ({n: ref.norm_stats(n) for n in ref.x}, ref.param_groups())
            twin_opt.step()
            twin_opt.zero_grad()
    log = read_log(tmp_path)
    assert log.steps == [0, 2, 4] and not log.partial_line
    for record in log.records:
        norms, groups = references[record.step]
        assert record.mode == "train" and record.lr == pytest.approx(1e-3)
        assert record.tokens == 4 * 15
        assert [n.name for n in record.norms] == list(norms)
        for n in record.norms:
            want = norms[n.name]
            doc = WatchRecord.to_json(record)["norms"]
            got = next(d for d in doc if d["name"] == n.name)
            for key in ("input_denominator", "output_std", "grad_scale"):
                assert_quantiles(got[key], want[key], rtol=2e-5)
            assert n.absmax == pytest.approx(want["absmax"], rel=1e-6)
            assert n.absmax_dim == want["absmax_dim"]
        got_groups = {(p.layer, p.group): p.grad_norm for p in record.params}
        assert got_groups.keys() == groups.keys()
        for key, value in groups.items():
            assert got_groups[key] == pytest.approx(value, rel=1e-5)


def _hook_count(model: nn.Module) -> int:
    modules = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
    params = sum(
        len(getattr(p, "_post_accumulate_grad_hooks", None) or {}) for p in model.parameters()
    )
    return modules + params


def test_no_hook_between_recording_steps(tmp_path: Path):
    model, data = ref_gpt(), batches(7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    counts = []
    with lninspect.watch(model, every=3, log_dir=tmp_path) as w:
        for ids in data:
            counts.append(_hook_count(model))  # before the step's forward
            model.loss(ids).backward()
            opt.step()
            opt.zero_grad()
            w.step()
    assert _hook_count(model) == 0
    armed = [c > 0 for c in counts]
    assert armed == [True, False, False, True, False, False, True]
    assert read_log(tmp_path).steps == [0, 3, 6]
    assert all(math.isnan(r.loss) for r in read_log(tmp_path).records)  # not given, not returned


def test_evaluation_passes_are_kept_out(tmp_path: Path):
    model, (train,) = ref_gpt(), batches(1, shape=(2, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        model.eval()
        with torch.no_grad():
            model(torch.randint(0, 64, (3, 7)))  # an evaluation between two steps
        model.train()
        model.loss(train).backward()
        opt.step()
        w.step()
    (record,) = read_log(tmp_path).records
    assert record.tokens == 2 * 9  # the training batch alone


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_counts_each_norm_once(tmp_path: Path, reentrant: bool):
    def run(model: nn.Module, folder: Path) -> WatchRecord:
        model.train()
        ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(3))
        with lninspect.watch(model, every=1, log_dir=folder) as w:
            model(input_ids=ids, labels=ids).loss.backward()
            w.step()
        return read_log(folder).records[0]

    plain = tiny_gpt2()
    plain.config.resid_pdrop = plain.config.embd_pdrop = plain.config.attn_pdrop = 0.0
    for module in plain.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    checkpointed = copy.deepcopy(plain)
    enable = getattr(checkpointed, "activation_checkpointing_enable", None)
    (enable or checkpointed.gradient_checkpointing_enable)({"use_reentrant": reentrant})
    want, got = run(plain, tmp_path / "plain"), run(checkpointed, tmp_path / "ckpt")
    assert got.tokens == want.tokens == 24
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    for a, b in zip(got.norms, want.norms, strict=True):
        assert (
            set(a.quantiles)
            == set(b.quantiles)
            >= {"input_denominator", "output_std", "grad_scale"}
        )
        for key in a.quantiles:
            qa, qb = a.quantiles[key], b.quantiles[key]
            assert math.isfinite(qa.q50)
            assert [getattr(qa, k) for k in KEYS] == pytest.approx(
                [getattr(qb, k) for k in KEYS], rel=1e-5
            )


def test_probe_runs_the_fixed_text_and_leaves_training_grads_alone(tmp_path: Path):
    model, data = ref_gpt(), batches(4)
    probe = torch.arange(20) % 64
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = {}
    with lninspect.watch(model, every=2, log_dir=tmp_path, text=probe, optimizer=opt) as w:
        for step, ids in enumerate(data, 1):
            model.loss(ids).backward()
            before = [p.grad.clone() for p in model.parameters()]
            opt.step()
            if step % 2 == 0:
                with torch.no_grad():
                    expected[step] = float(model.eval().loss(probe[None]))
                model.train()
            w.step()
            after = [p.grad for p in model.parameters()]
            assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
            assert model.training
            opt.zero_grad()
    log = read_log(tmp_path)
    assert log.steps == [0, 2, 4]
    assert all(r.mode == "probe" and r.tokens == 20 for r in log.records)
    for record in log.records[1:]:
        assert record.loss == pytest.approx(expected[record.step], rel=1e-5)
    assert all(math.isfinite(p.grad_norm) for p in log.records[0].params)


def test_probe_text_needs_a_tokenizer(tmp_path: Path):
    with pytest.raises(LninspectError, match="tokenizer"):
        with lninspect.watch(ref_gpt(), log_dir=tmp_path, text="some words"):
            pass


def test_existing_log_is_refused_unless_resumed(tmp_path: Path):
    model = ref_gpt()
    for resume in (False, True):
        with lninspect.watch(model, every=1, log_dir=tmp_path, resume=resume) as w:
            model.loss(batches(1)[0]).backward()
            w.step(loss=1.0)
    with pytest.raises(LninspectError, match="already exists"):
        with lninspect.watch(model, log_dir=tmp_path):
            pass
    assert read_log(tmp_path).steps == [0, 0]


def test_every_line_is_a_synced_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import os

    calls: list[str] = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append("write") or real_write(fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    model = ref_gpt()
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        for ids in batches(2):
            model.loss(ids).backward()
            w.step(loss=2.5)
    assert calls == ["write", "fsync", "write", "fsync"]
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    assert [json.loads(line)["schema"] for line in lines] == [WATCH_SCHEMA] * 2


def test_reader_skips_a_partial_last_line_and_refuses_a_damaged_one(tmp_path: Path):
    model = ref_gpt()
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        for ids in batches(3):
            model.loss(ids).backward()
            w.step(loss=1.5)
    path = tmp_path / LOG_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last line cut while being written
    log = read_log(path)
    assert log.steps == [0, 1] and log.partial_line
    lines = data.split(b"\n")
    path.write_bytes(lines[0] + b"\n" + lines[1][:50] + b"\n" + lines[2] + b"\n")
    with pytest.raises(LninspectError, match="line 2"):
        read_log(path)
    path.write_bytes(b"")
    with pytest.raises(LninspectError, match="no recorded step"):
        read_log(path)


class FakeWriter:
    instances: list[FakeWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False
        FakeWriter.instances.append(self)

    def add_scalar(self, name: str, value: float, global_step: int) -> None:
        self.scalars.append((name, value, global_step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeRun:
    def __init__(self) -> None:
        self.logged: list[dict] = []
        self.metrics: list[tuple] = []

    def define_metric(self, name: str, step_metric: str | None = None) -> None:
        self.metrics.append((name, step_metric))

    def log(self, values: dict) -> None:
        self.logged.append(values)


def test_tensorboard_and_wandb_get_the_same_scalars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    board = types.ModuleType("torch.utils.tensorboard")
    board.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    wandb = types.ModuleType("wandb")
    wandb.run = FakeRun()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    FakeWriter.instances.clear()
    model = ref_gpt()
    with lninspect.watch(model, every=2, log_dir=tmp_path) as w:
        for ids in batches(3):
            model.loss(ids).backward()
            w.step(loss=3.0)
    (writer,) = FakeWriter.instances
    assert writer.log_dir == str(tmp_path) and writer.closed
    assert {s for _, _, s in writer.scalars} == {0, 2}
    names = {n for n, _, _ in writer.scalars}
    assert "lninspect/loss" in names and "lninspect/input_denominator/blocks.2.ln_2" in names
    assert "lninspect/grad_norm/layer1.mlp_in" in names
    run = wandb.run  # type: ignore[attr-defined]
    assert [d["lninspect/step"] for d in run.logged] == [0, 2]
    assert ("lninspect/*", "lninspect/step") in run.metrics
    first = {n: v for n, v, s in writer.scalars if s == 0}
    assert {k: v for k, v in run.logged[0].items() if k != "lninspect/step"} == first
    record = read_log(tmp_path).records[0]
    assert (
        first["lninspect/input_denominator/blocks.0.ln_1"]
        == record.norms[0].quantiles["input_denominator"].q50
    )


def test_missing_optional_writers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setitem(sys.modules, "wandb", None)
    model = ref_gpt()
    with lninspect.watch(model, every=1, log_dir=tmp_path / "a"):
        pass  # neither is required
    with pytest.raises(LninspectError, match="tensorboard"):
        with lninspect.watch(model, log_dir=tmp_path / "b", tensorboard=True):
            pass
    with pytest.raises(LninspectError, match="wandb"):
        with lninspect.watch(model, log_dir=tmp_path / "c", wandb=True):
            pass
    assert _hook_count(model) == 0


def test_an_unknown_reductions_mode_is_refused(tmp_path: Path):
    with pytest.raises(LninspectError, match="reductions must be one of auto, eager, compiled"):
        with lninspect.watch(ref_gpt(), log_dir=tmp_path, reductions="fast"):
            pass


def test_hooks_are_removed_when_the_loop_fails(tmp_path: Path):
    model = ref_gpt()
    with pytest.raises(RuntimeError, match="boom"):
        with lninspect.watch(model, every=1, log_dir=tmp_path):
            model.loss(batches(1)[0])
            raise RuntimeError("boom")
    assert _hook_count(model) == 0
    assert (tmp_path / LOG_NAME).read_text() == ""  # the step never ended: nothing written


def test_quantiles_of_many_arrays_at_once_equal_one_by_one():
    rng = np.random.default_rng(0)
    arrays = [rng.lognormal(0, 1, (4, 7)) for _ in range(3)] + [rng.normal(size=5), None]
    arrays[1][2, 3] = np.nan  # left to the one-by-one path
    assert quantiles_of_each(arrays) == [quantiles(a) for a in arrays]


@pytest.mark.parametrize("length", [1, 2, 7, 100, 2040])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sorted_quantiles_are_numpys_to_the_bit(length: int, dtype: type):
    rows = np.random.default_rng(length).lognormal(0, 2, (5, length)).astype(dtype)
    rows[0] = rows[0, :1]  # ties: a constant row
    qs = (0.0, *QS)
    want = np.quantile(rows.astype(np.float64), qs, axis=1).T
    np.testing.assert_array_equal(sorted_quantiles(np.sort(rows, axis=1), qs), want)
