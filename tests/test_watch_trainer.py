"""`WatchCallback` in a transformers Trainer writes the log a plain loop with `lninspect.watch`
writes for the same steps; under gradient accumulation it records the last micro-batch and
the step's loss as the Trainer logs it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import lninspect
from lninspect.monitor.trainer import WatchCallback
from lninspect.results.watch import read_log
from tests.conftest import tiny_gpt2

KEYS = ("q05", "q25", "q50", "q75", "q95", "max")


def no_dropout_gpt2():
    model = tiny_gpt2()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def examples(count: int, tokens: int = 12, same: bool = True) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    rows = []
    for _ in range(count):
        if not rows or not same:
            ids = torch.randint(0, 300, (tokens,), generator=generator)
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def train(model, folder: Path, data, every: int, steps: int, accumulate: int = 1, **callback):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=accumulate,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        callbacks=[WatchCallback(every=every, **callback)],
    )
    trainer.train()
    return trainer


def test_trainer_callback_writes_the_plain_loop_log(tmp_path: Path):
    model = no_dropout_gpt2()
    twin = copy.deepcopy(model)
    data = examples(16)  # identical rows: the Trainer's shuffling cannot change a batch
    trainer_counts = []
    model.register_forward_pre_hook(
        lambda m, a, kw: trainer_counts.append(kw["num_items_in_batch"]), with_kwargs=True
    )
    trainer = train(model, tmp_path / "trainer", data, every=2, steps=5)
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    batch = torch.stack([data[0]["input_ids"]] * 2)
    count = trainer_counts[0]
    twin.train()
    optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-3, weight_decay=0.0)
    with lninspect.watch(twin, every=2, log_dir=tmp_path / "loop", optimizer=optimizer) as w:
        for _ in range(5):
            # as the Trainer calls it (its count of the step's label tokens)
            twin(input_ids=batch, labels=batch, num_items_in_batch=count).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            w.step()
    got = read_log(tmp_path / "trainer" / "lninspect")
    want = read_log(tmp_path / "loop")
    assert got.steps == want.steps == [0, 2, 4]
    for a, b in zip(got.records, want.records, strict=True):
        assert a.loss == pytest.approx(logged[a.step + 1], rel=1e-4)  # as the Trainer logs it
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.lr == pytest.approx(b.lr) and a.tokens == b.tokens == 24
        for x, y in zip(a.norms, b.norms, strict=True):
            assert x.name == y.name and x.absmax_dim == y.absmax_dim
            for key in ("input_denominator", "output_std", "grad_scale"):
                assert [getattr(x.quantiles[key], k) for k in KEYS] == pytest.approx(
                    [getattr(y.quantiles[key], k) for k in KEYS], rel=1e-4
                )
        assert [p.grad_norm for p in a.params] == pytest.approx(
            [p.grad_norm for p in b.params], rel=1e-4
        )
    assert not any(m._forward_hooks for m in model.modules())  # removed at the end


def test_accumulated_steps_record_the_last_micro_batch(tmp_path: Path):
    model = no_dropout_gpt2()
    trainer = train(
        model,
        tmp_path,
        examples(24, same=False),
        every=2,
        steps=3,
        accumulate=3,
        log_dir=tmp_path / "log",
    )
    log = read_log(tmp_path / "log")
    assert log.steps == [0, 2]
    assert all(r.tokens == 2 * 12 for r in log.records)  # one micro-batch of 2 rows
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    for record in log.records:  # the Trainer logs the loss of step s once s + 1 are done
        assert record.loss == pytest.approx(logged[record.step + 1], rel=1e-3)


def test_probe_text_through_the_trainer(tmp_path: Path):
    model = no_dropout_gpt2()
    train(
        model,
        tmp_path,
        examples(8),
        every=2,
        steps=4,
        text=torch.arange(16),
        log_dir=tmp_path / "p",
    )
    log = read_log(tmp_path / "p")
    assert log.steps == [0, 2, 4] and {r.mode for r in log.records} == {"probe"}
