"""The package's layout keeps its promises: where torch may be imported, what is documented."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import lninspect
from lninspect import docs_tables, statistics
from lninspect.results import GradStats, InputStats, OutputStats
from lninspect.results.codec import encode
from lninspect.roles import PLACEMENTS, ROLES
from tests import processes

PACKAGE = Path(lninspect.__file__).parent
DOCS = Path(__file__).parents[1] / "docs"
GOLDEN = Path(__file__).parent / "golden"
# The torch side: loading, discovery, capture, the corpus and placement runs, the watcher of
# training runs and the compare job, and jobs.py, which ties them together for one text.
# Everything else must import without torch.
TORCH_SIDE = ("model", "norms", "hooks", "corpus", "placement", "monitor", "jobs.py")


def modules(torch_side: bool) -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__main__.py":
            continue
        inside = relative.parts[0] in TORCH_SIDE
        if inside == torch_side:
            parts = relative.with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            names.append(".".join(("lninspect", *parts)))
    return names


def test_only_the_torch_side_imports_torch():
    light = modules(torch_side=False)
    assert "lninspect.render.report" in light and "lninspect.summary" in light
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in light)
    code += "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\nassert not heavy, heavy"
    done = processes.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_declaration_of_statistics_imports_nothing_above_it():
    """statistics.py is read by every layer: it imports from none of the layers that read
    it, not even inside a function or for type checking (issue 37)."""
    tree = ast.parse((PACKAGE / "statistics.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [
        a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
    ]
    upward = ("lninspect.hooks", "lninspect.render", "lninspect.cli")
    assert imported and not [m for m in imported if m.startswith(upward)]


def test_the_result_blocks_hold_the_declared_statistics():
    """Each block reads and writes exactly its side's statistics, in declaration order."""
    for cls, side in ((InputStats, "input"), (OutputStats, "output"), (GradStats, "grad")):
        record = {s.key: np.zeros((1, 2), dtype=s.dtype) for s in statistics.on_side(side)}
        block = cls.from_record(record)
        assert list(block.to_fields()) == [s.field for s in statistics.on_side(side)]
        again = cls.from_fields(json.loads(json.dumps(encode(block))))
        for s, value in again.items():
            assert value is not None and value.dtype == np.dtype(s.dtype), s.key
        required = [s for s in statistics.on_side(side) if not s.optional]
        with pytest.raises(TypeError):
            cls(**{s.field: record[s.key] for s in required[1:]})


def test_statistics_table_matches_the_reductions():
    import torch

    from lninspect.hooks.reduce import token_stats

    record = token_stats(torch.randn(2, 3, 8), torch.randn(2, 3, 8), 1e-5)
    forward = [s.key for s in statistics.STATISTICS if s.side in ("input", "output")]
    assert list(record) == forward
    for key, value in record.items():
        assert value.shape == (2, 3) and str(value.dtype) == f"torch.{statistics.BY_KEY[key].dtype}"


def test_docs_show_the_generated_tables():
    """Every page of docs/ is as `python -m lninspect.docs_tables` writes it."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        assert docs_tables.refresh(text) == text, f"{page.name}: python -m lninspect.docs_tables"
        found += docs_tables.blocks(text)
    assert sorted(found) == sorted(docs_tables.GENERATED)


def _keys(value: object, prefix: str = "") -> set[str]:
    """Every object key of a JSON document (without list indices)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            found |= _keys(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            found |= _keys(item, prefix)
    return found


def test_every_json_key_and_role_is_documented():
    docs = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    spans = re.findall(r"```.*?```|`[^`]+`|\*\*[^*]+\*\*|\"[^\"\n]+\"", docs, flags=re.S)
    documented = {word for span in spans for word in re.findall(r"[A-Za-z_][\w+]*", span)}
    keys = set()
    for golden in GOLDEN.glob("*.json"):
        keys |= _keys(json.loads(golden.read_text()))
    keys -= {"a.txt", "b.txt"}  # file names inside the corpus golden file, not keys
    assert not sorted(keys - documented), "JSON keys documented nowhere in docs/"
    assert not sorted(set(ROLES + PLACEMENTS) - documented), "roles documented nowhere"
