"""Older documents still load: each file in tests/golden/previous/ is the golden document of
the version before the current one (copied there when a version was added; a watch log is
one record per line), read by today's reader and written back as the current version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lninspect import statistics
from lninspect.results import GradsResult, StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.results.compare import TOKEN_DENOMINATOR, CompareResult
from lninspect.results.placement import PLACEMENT_SCHEMAS, PlacementResult
from lninspect.results.watch import WatchRecord
from lninspect.statistics import INPUT_DENOMINATOR

PREVIOUS = Path(__file__).parent / "golden" / "previous"
READERS: dict[str, Any] = {
    "stats": StatsResult,
    "grads": GradsResult,
    "stats-aggregate": AggregateResult,
    "watch": WatchRecord,
    "compare": CompareResult,
    "placement": PlacementResult,
}


def versions(name: str) -> tuple[str, ...]:
    """The schemas of a document, oldest first: placement's are its own (no statistics)."""
    return PLACEMENT_SCHEMAS if name == "placement" else statistics.schemas(name)


def previous() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of tests/golden/previous/ (a watch log gives one per line)."""
    return [
        (path, json.loads(line))
        for path in sorted(PREVIOUS.glob("*.json"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_there_are_older_documents_of_known_schemas():
    held = {doc["schema"].removeprefix("lninspect.").split("/")[0] for _, doc in previous()}
    assert held and held <= set(READERS)


@pytest.mark.parametrize("found", previous(), ids=lambda f: f"{f[0].stem}")
def test_an_older_document_loads(found: tuple[Path, dict[str, Any]]):
    _, doc = found
    name = doc["schema"].removeprefix("lninspect.").split("/")[0]
    assert doc["schema"] != versions(name)[-1], "not an older version"
    loaded = READERS[name].from_json(doc)
    generation = statistics.generation_of(doc["schema"]) if name != "placement" else 1
    newer = [s for s in statistics.STATISTICS if s.since > generation]
    for norm in getattr(loaded, "norms", []):
        for s in newer:  # absent, not an error
            block = getattr(norm, s.side, None)
            assert block is None or not hasattr(block, "get") or block.get(s.field) is None
    again = loaded.to_json()
    assert again["schema"] == versions(name)[-1]
    assert READERS[name].from_json(again).to_json() == again


def test_compare_1_reads_its_spike_z_as_max_abs_z():
    (doc,) = [d for _, d in previous() if d["schema"] == "lninspect.compare/1"]
    old = doc["rows"][0]["models"][0]
    row = CompareResult.from_json(doc).rows[0].models[0]
    assert row.max_abs_z == old["spike_z"] or (old["spike_z"] is None and row.max_abs_z != 0)
    assert row.value(INPUT_DENOMINATOR) == old["input_std"]


# Generation 4 (placement/5) named the summary input_std, the rms of an RMSNorm,
# input_denominator: older documents read it under the new name, in the same place.


def _older(schema: str) -> dict[str, Any]:
    (doc,) = [d for _, d in previous() if d["schema"] == schema]
    return doc


def _renamed(block: dict[str, Any]) -> dict[str, Any]:
    return {INPUT_DENOMINATOR if k == "input_std" else k: v for k, v in block.items()}


def test_watch_3_reads_its_input_std_as_input_denominator():
    doc = _older("lninspect.watch/3")
    again = WatchRecord.from_json(doc).to_json()
    assert [_renamed(n) for n in doc["norms"]] == again["norms"]
    assert all("input_std" in n for n in doc["norms"])  # the old key was there to rename


def test_compare_4_and_1_read_input_std_as_input_denominator():
    for schema in ("lninspect.compare/1", "lninspect.compare/4"):
        doc = _older(schema)
        again = CompareResult.from_json(doc).to_json()
        for old, new in zip(doc["rows"], again["rows"], strict=True):
            got = [_renamed(m) for m in old["models"]]
            if schema.endswith("/1"):
                got = [{"max_abs_z" if k == "spike_z" else k: v for k, v in m.items()} for m in got]
            assert [sorted(m.items()) for m in got] == [sorted(m.items()) for m in new["models"]]
    names = {"input_std": INPUT_DENOMINATOR, "token_input_std": TOKEN_DENOMINATOR}
    old = _older("lninspect.compare/1")["differences"]
    assert {d["statistic"] for d in old} >= set(names)  # compare/4's golden has none
    new = CompareResult.from_json(_older("lninspect.compare/1")).differences
    assert [d.statistic for d in new] == [names.get(d["statistic"], d["statistic"]) for d in old]


def test_placement_4_reads_training_input_std_as_input_denominator():
    doc = _older("lninspect.placement/4")
    training = PlacementResult.from_json(doc).training
    assert training is not None
    for old, run in zip(doc["training"]["runs"], training.runs, strict=True):
        assert list(old["input_std"]) == list(run.input_denominator)
        for key, values in old["input_std"].items():  # float32 arrays, as written
            np.testing.assert_array_equal(run.input_denominator[key], np.float32(values))
    written = PlacementResult.from_json(doc).to_json()["training"]["runs"]
    assert [list(_renamed(r)) for r in doc["training"]["runs"]] == [list(r) for r in written]


def test_the_current_key_wins_over_its_former_one():
    doc = json.loads(json.dumps(_older("lninspect.watch/3")))
    norm = doc["norms"][0]
    norm[INPUT_DENOMINATOR] = {**norm["input_std"], "q50": 123.0}
    read = WatchRecord.from_json(doc).norms[0].quantiles
    assert read[INPUT_DENOMINATOR].q50 == 123.0 and "input_std" not in read
