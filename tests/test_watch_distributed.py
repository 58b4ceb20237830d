"""`lninspect.watch` with 2 CPU processes (gloo): DDP and FSDP2 under torchrun, the Trainer
callback under `accelerate launch` (tests/distributed_watch.py), against one process on the
same global batch."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import distributed_watch as job
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_torchrun import torchrun

from lninspect.hooks.capture import capture
from lninspect.monitor.bins import bin_counts, bin_quantiles, value_range
from lninspect.monitor.params import ParamGradNorms
from lninspect.monitor.ranks import combine
from lninspect.norms.discovery import find_norms
from lninspect.results.watch import QUANTILE_FIELDS, QUANTILES, read_log
from tests import processes

BIN_WIDTH = 2 ** (1 / 32) - 1  # the relative error bound of a quantile from the bins


def launch(launcher: list[str], out: Path, *args: str) -> Path:
    """Run the job with 2 processes started by `launcher`; its output folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(out / "hf")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    command = [*launcher, job.__file__, str(out), *args]
    done = processes.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    launcher = [*torchrun(), "--standalone", "--nproc_per_node", "2"]
    return launch(launcher, tmp_path_factory.mktemp("two"))


def accelerate_launch() -> list[str]:
    """2 processes on the CPU: accelerate 1.15 starts several CPU processes only through
    mpirun (`--cpu --num_processes 2` alone runs one), so `--multi_gpu` (its torchrun
    launcher; the job's Trainer runs with `use_cpu=True`, gloo)."""
    flags = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port"]
    rest = ["0", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, *rest]


def reference() -> list[dict]:
    """Per step of one process on the whole batch: the records combined as over ranks (here
    one), the loss and the parameter group norms from `.grad`."""
    model, ids = job.build_model(), job.global_batch()
    norms = find_norms(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    params = ParamGradNorms(model, norms)
    steps = []
    for _ in range(job.STEPS):
        with capture(model, norms, grads=True, eval_mode=False) as cap:
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
        grads = {i: torch.linalg.vector_norm(p.grad.double()) for i, p in enumerate(params.tensors)}
        combined = combine(norms, cap.result(), float(loss.detach()))
        steps.append({"combined": combined, "params": params.grouped(grads)})
        optimizer.step()
        optimizer.zero_grad()
    steps.append({"weights": job.weight_summaries(model)})  # after the last step
    return steps


@pytest.fixture(scope="module")
def one_process() -> list[dict]:
    return reference()


@pytest.mark.parametrize(("folder", "grads"), [("ddp", "averaged"), ("fsdp", "full")])
def test_combined_log_equals_one_process(
    two_processes: Path, one_process: list[dict], folder: str, grads: str
):
    log = read_log(two_processes / folder)
    assert [r.step for r in log.records] == list(range(job.STEPS))
    for record, want in zip(log.records, one_process[: job.STEPS], strict=True):
        combined = want["combined"]
        assert (record.world_size, record.grads) == (2, grads)
        assert record.tokens == combined.tokens == job.SEQUENCES * (job.TOKENS - 1)
        assert record.loss == pytest.approx(combined.loss, rel=1e-6)
        for got, ref in zip(record.norms, combined.norms, strict=True):
            assert got.name == ref.name and got.absmax == pytest.approx(ref.absmax, rel=1e-6)
            assert got.absmax_dim == ref.absmax_dim and got.nonfinite == ref.nonfinite == 0
            row, position = divmod(got.absmax_token, job.TOKENS - 1)  # the rank's own rows
            assert (got.absmax_rank + 2 * row) * (job.TOKENS - 1) + position == ref.absmax_token
            for key in QUANTILE_FIELDS:  # same bin counts: equal up to float32 rounding
                np.testing.assert_allclose(
                    list(vars(got.quantiles[key]).values()),
                    list(vars(ref.quantiles[key]).values()),
                    rtol=1e-5,
                    err_msg=f"{got.name} {key}",
                )
        assert [(p.layer, p.group) for p in record.params] == [
            (p.layer, p.group) for p in want["params"]
        ]
        np.testing.assert_allclose(
            [p.grad_norm for p in record.params],
            [p.grad_norm for p in want["params"]],
            rtol=1e-5,
            atol=1e-8,
        )


def test_sharded_norm_weights_summarised_whole(two_processes: Path, one_process: list[dict]):
    """FSDP2 leaves a shard on each norm: its summary is the whole weight's (gathered)."""
    sharded, got = json.loads((two_processes / "fsdp" / "weights.json").read_text())
    assert sharded
    want = one_process[-1]["weights"]
    assert len(got) == len(want) == 5 and [w["negative"] for w in got] == [
        w["negative"] for w in want
    ]
    for key in ("mean", "std", "min", "max"):
        np.testing.assert_allclose([w[key] for w in got], [w[key] for w in want], rtol=1e-5)


def test_quantiles_from_bins_near_exact_ones(two_processes: Path, tmp_path: Path):
    """The single-process log (exact quantiles, world size not written) within a bin's width."""
    job.train(job.build_model(), job.global_batch(), tmp_path)
    one, two = read_log(tmp_path), read_log(two_processes / "ddp")
    for exact, binned in zip(one.records, two.records, strict=True):
        assert exact.world_size is None and exact.grads is None
        for a, b in zip(exact.norms, binned.norms, strict=True):
            assert a.absmax_rank is None and a.absmax == pytest.approx(b.absmax, rel=1e-6)
            for key in QUANTILE_FIELDS:
                np.testing.assert_allclose(
                    list(vars(b.quantiles[key]).values()),
                    list(vars(a.quantiles[key]).values()),
                    rtol=BIN_WIDTH,
                )


def test_every_rank_stops_when_rank_0_cannot_open_the_log(two_processes: Path):
    messages = [(two_processes / f"refused-{rank}.txt").read_text() for rank in (0, 1)]
    assert "already exists" in messages[0] and "another rank could not start" in messages[1]


def test_trainer_under_accelerate_launch_writes_one_log(tmp_path: Path):
    pytest.importorskip("accelerate")
    folder = launch(accelerate_launch(), tmp_path, "trainer") / "trainer"
    assert [p.name for p in (folder / "lninspect").iterdir()] == ["lninspect-watch.jsonl"]
    log = read_log(folder / "lninspect")
    history = [h for h in json.loads((folder / "history.json").read_text()) if "loss" in h]
    assert [r.step for r in log.records] == list(range(job.STEPS))
    for record, logged in zip(log.records, history, strict=True):
        assert (record.world_size, record.grads, record.tokens) == (2, "averaged", 2 * job.TOKENS)
        assert record.loss == pytest.approx(float(logged["loss"]), rel=1e-3)


def test_bins_merge_exactly_and_bound_the_error():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(0, 2, 3000), [0.0, np.nan, np.inf]])
    halves = values[::2], values[1::2]
    merged = bin_counts(halves[0]) + bin_counts(halves[1])
    np.testing.assert_array_equal(merged, bin_counts(values))
    low, high = value_range(values)
    finite = values[np.isfinite(values)]
    got = bin_quantiles(merged, low, high, (0.0, *QUANTILES, 1.0))
    want = np.quantile(finite, (0.0, *QUANTILES, 1.0))
    assert got[0] == 0.0 and got[-1] == finite.max()
    np.testing.assert_allclose(got, want, rtol=BIN_WIDTH)
    assert bin_quantiles(bin_counts(np.array([3.5])), 3.5, 3.5, QUANTILES) == [3.5] * 5
    empty = np.array([])
    assert all(math.isnan(q) for q in bin_quantiles(bin_counts(empty), 0.0, 0.0, QUANTILES))


def test_bins_merge_signed_values_within_a_bin_width():
    """Kurtosis may be negative: the bins mirror around zero, and halves merge exactly."""
    values = np.random.default_rng(0).standard_normal(4001) * 3 - 0.5
    halves = bin_counts(values[:2000]) + bin_counts(values[2000:])
    assert np.array_equal(halves, bin_counts(values))
    low, high = value_range(values)
    got = bin_quantiles(halves, low, high, QUANTILES)
    want = np.quantile(values, QUANTILES)
    np.testing.assert_allclose(got, want, rtol=2 ** (1 / 32) - 1)
