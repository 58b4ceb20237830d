"""No hook and no corpus batch reads a value back to the host (issue 14), checked on the CPU;
and the records of a run reach the host in a few copies, not one per tensor.

A tensor on the meta device has a shape and no data, so every operation that would make a
GPU wait for its results raises there: `.item()`, `bool()` of a tensor, `.cpu()`,
`.tolist()`, `nonzero`, boolean-mask indexing, `unique`. Running a model on the meta device
inside `capture` therefore fails wherever a hook (forward, gradient or spike) or the corpus
aggregation of a batch would synchronise a GPU; only the gathering at the end of a run may.
On CUDA, benchmarks/device_check.py runs the same under torch.cuda.set_sync_debug_mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers
from torch import nn

from lninspect import capture
from lninspect.corpus.aggregator import Aggregator
from lninspect.hooks import reduce
from lninspect.hooks.transfer import copy_together, to_host, transfer_batches
from lninspect.norms.discovery import NormInfo, find_norms
from lninspect.options import MapOptions, SpikeOptions
from tests.test_architectures import FAMILIES

BATCH, TOKENS = 2, 8
SPIKES = SpikeOptions()
# LayerNorm (gpt2), per-head RMSNorm with tokens on axis 1 (qwen3) and on axis 2 (gemma3's
# q/k norms see (batch, heads, tokens)), one norm before parallel branches (phi).
NAMES = ["gpt2", "qwen3", "gemma3", "phi"]
DTYPES = (torch.float32, torch.int64, torch.bool)


def on_meta(name: str) -> tuple[nn.Module, list[NormInfo], torch.Tensor]:
    """A tiny random model of family `name` on the meta device, its norms and input ids."""
    model = transformers.AutoModelForCausalLM.from_config(FAMILIES[name].config()).eval()
    norms = find_norms(model)  # discovery probes the real weights, before they go
    ids = torch.randint(0, 100, (BATCH, TOKENS), device="meta")
    return model.to("meta"), norms, ids


def all_on_meta(records: dict[str, list[dict[str, torch.Tensor]]]) -> bool:
    """Every recorded tensor stayed on the device (the spike layout is a small host tensor)."""
    tensors = [v for calls in records.values() for r in calls for k, v in r.items()]
    return bool(tensors) and all(t.device.type == "meta" for t in tensors if t.ndim > 1)


@pytest.mark.parametrize("name", NAMES)
def test_forward_spike_and_gradient_hooks_never_sync(name: str) -> None:
    model, norms, ids = on_meta(name)
    maps = MapOptions(sample=True, size=64)
    with capture(model, norms, grads=True, spikes=SPIKES, reductions="eager", maps=maps) as cap:
        model(input_ids=ids).logits.sum().backward()
        hooks: Any = cap._hooks  # the records as the hooks left them, before any gathering
    kept = [t for s in hooks.maps.values() for t in s.tensors().values()]  # the map's sample
    assert len(hooks.maps) == len(norms) and all(t.device.type == "meta" for t in kept)
    assert all(len(hooks.forward[n.name]) == 1 for n in norms)
    assert all_on_meta(hooks.forward) and all_on_meta(hooks.spike_records)
    assert all(set(c[0]) >= {"grad_output", "grad_input"} for c in hooks.backward.values())
    assert all_on_meta(hooks.backward)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_batches_aggregate_without_a_sync(name: str) -> None:
    model, norms, ids = on_meta(name)
    aggregator = Aggregator(norms, TOKENS, torch.device("meta"), spikes=True)
    with torch.inference_mode(), capture(model, norms, spikes=SPIKES) as cap:
        for _ in range(2):
            model(input_ids=ids)
            aggregator.update(cap.drain(), (BATCH, TOKENS), ids)
    assert aggregator.calls == [2] * len(norms) and aggregator.tokens == 2 * BATCH * TOKENS
    assert set(aggregator.census) == {n.name for n in norms}


def test_a_hook_that_reads_a_value_back_fails_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check has teeth: one `.item()` in the reductions is caught."""
    real = reduce.token_stats

    def syncing(x: torch.Tensor, *args: Any) -> dict[str, torch.Tensor]:
        if x.abs().max().item() > 1e4:  # the kind of branch a hook must not take
            pass
        return real(x, *args)

    monkeypatch.setattr("lninspect.hooks.fused.token_stats", syncing)
    model, norms, ids = on_meta("gpt2")
    with (
        pytest.raises(RuntimeError, match="item"),
        capture(model, norms, reductions="eager"),
    ):
        model(input_ids=ids)


def test_records_reach_the_host_in_one_copy_per_dtype() -> None:
    """Capture.result() copies a run's records in runs of one dtype, bounded in bytes."""
    on = {dtype: torch.zeros(4, 8, dtype=dtype, device="meta") for dtype in DTYPES}
    tensors = [on[torch.float32], on[torch.int64], torch.zeros(3), on[torch.float32]]
    tensors += [on[torch.bool], on[torch.float32], torch.zeros((), device="meta")]
    assert sorted(transfer_batches(tensors, limit=2**20)) == [[0, 3, 5, 6], [1], [4]]
    # 128 bytes per float32 tensor: a run closes before it would pass the limit
    assert sorted(transfer_batches(tensors, limit=256)) == [[0, 3], [1], [4], [5, 6]]
    big = torch.zeros(1000, device="meta")  # larger than the limit: a run of its own
    assert transfer_batches([big, big], limit=100) == [[0], [1]]


def test_copied_together_the_values_and_shapes_are_kept() -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (), (0, 5), (2, 1, 3), (7,)]
    tensors = [torch.randn(shape, generator=generator) for shape in shapes]
    tensors.append(torch.randn(4, 6, generator=generator).t())  # not contiguous
    moved = copy_together(tensors)
    assert [m.shape for m in moved] == [t.shape for t in tensors]
    assert all(torch.equal(m, t) for m, t in zip(moved, tensors, strict=True))
    assert len({m.untyped_storage().data_ptr() for m in moved}) == 1  # one host buffer
    assert to_host(tensors)[0] is tensors[0]  # already on the host: left as it is


def test_the_census_reaches_the_host_in_one_copy_per_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """A corpus census on the device is read at the end in a copy per dtype
    (lninspect.hooks.transfer), never one `.cpu()` per tensor (which raises on meta)."""
    from lninspect.hooks import transfer
    from lninspect.hooks.census import trajectory

    model, norms, ids = on_meta("gpt2")
    aggregator = Aggregator(norms, TOKENS, torch.device("meta"), spikes=True)
    with torch.inference_mode(), capture(model, norms, spikes=SPIKES) as cap:
        model(input_ids=ids)
        aggregator.update(cap.drain(), (BATCH, TOKENS), ids)
    copies: list[set[torch.dtype]] = []

    def copy(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        copies.append({t.dtype for t in tensors})
        return [torch.zeros(t.shape, dtype=t.dtype) for t in tensors]

    monkeypatch.setattr(transfer, "copy_together", copy)
    census = aggregator.census[norms[0].name]
    census.entries(16, None)
    assert copies == [{torch.int64}, {torch.float32}]
    census.dimensions(3.0)
    trajectory(aggregator.census, None, {n.name for n in norms if n.reads == "residual"})
    assert copies[2:] == [{torch.float32}, {torch.int64}, {torch.float32}]
