"""The docs' generated blocks, from lninspect.statistics and the placement experiment's
layouts: `python -m lninspect.docs_tables`.

A block sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->` in any page of
docs/; its text is `GENERATED[NAME]()`. tests/test_layout.py checks
that every page is as this would write it. No torch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lninspect.placement.layouts import markdown_table as layouts_table
from lninspect.statistics import GENERATED as STATISTICS_BLOCKS

GENERATED = {**STATISTICS_BLOCKS, "layouts": layouts_table}

BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end: \2 -->)", flags=re.S)


def refresh(text: str) -> str:
    """`text` with every generated block rewritten; an unknown name is an error."""

    def block(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATED:
            raise KeyError(f"no generated block {name!r}")
        return f"{match.group(1)}{GENERATED[name]()}\n{match.group(4)}"

    return BLOCK.sub(block, text)


def blocks(text: str) -> list[str]:
    """The names of the generated blocks in `text`."""
    return [m.group(2) for m in BLOCK.finditer(text)]


def main(docs: Path) -> int:
    for page in sorted(docs.glob("*.md")):
        text = page.read_text()
        if refresh(text) != text:
            page.write_text(refresh(text))
            print(f"rewrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs")))
