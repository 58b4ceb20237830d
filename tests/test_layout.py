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
    assert "lninspect.render.report" in light and "lninspect.derived" in light
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


# Layers that run one way: imports counted wherever they sit (inside functions too) ---------

# A layer and what it must not import: results and the declarations below them know nothing
# of capture, rendering or the command line; rendering nothing of the command line.
FORBIDDEN = {
    "lninspect.results": ("lninspect.hooks", "lninspect.render", "lninspect.cli"),
    "lninspect.statistics": ("lninspect.hooks", "lninspect.render", "lninspect.cli"),
    "lninspect.options": ("lninspect.hooks", "lninspect.render", "lninspect.cli"),
    "lninspect.errors": ("lninspect.hooks", "lninspect.render", "lninspect.cli"),
    "lninspect.render": ("lninspect.cli",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, known: set[str], typing: bool) -> set[str]:
    """The lninspect modules that the module at `path` imports, anywhere in its body (under
    `if TYPE_CHECKING:`, never run, only with `typing`): `from a.b import c` is a.b.c when
    that is a module, else a.b; relative imports resolved."""
    import ast

    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only and not typing:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
    return {m for m in found if m in known and m != name}


def import_graph(typing: bool = False) -> dict[str, set[str]]:
    """Module -> the lninspect modules it imports (with `typing`, for type hints too)."""
    paths = [p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"]
    known = {module_name(p) for p in paths}
    return {module_name(p): imported(p, known, typing) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle_through_a_function_body():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    graph = import_graph()
    assert "lninspect.results.codec" in graph["lninspect.results.one_text"]
    assert "lninspect.results.one_text" in import_graph(typing=True)["lninspect.results.frames"]
    assert "lninspect.render.fit" in graph["lninspect.cli.console"]  # inside _table_width


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())  # the imports that run: a type hint's import never does
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_the_layers_import_only_downward():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph(typing=True).items()  # a layer's types too
        for layer, below in FORBIDDEN.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if target.startswith(below)
    )
    assert not wrong, "\n".join(wrong)
