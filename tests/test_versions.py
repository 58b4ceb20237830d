"""Older documents still load: each file in tests/golden/previous/ is the golden document of
the version before the current one (copied there when a version was added; a watch log is
one record per line), read by today's reader and written back as the current version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lninspect import statistics
from lninspect.results import GradsResult, StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.results.compare import CompareResult
from lninspect.results.placement import PLACEMENT_SCHEMAS, PlacementResult
from lninspect.results.watch import WatchRecord

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
    assert row.value("input_std") == old["input_std"]
