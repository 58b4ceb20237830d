"""Tables that fit the width they are given (no torch): the optional columns that do not fit
are left out, least important first, and named in the caption; every other column is at
least as wide as its widest cell, so no number, header or module name is ever cut.

A cell is one line (a number, a name, a token's text cut to a fixed width), or, in a column
that wraps, words or a tuple of items that break lines only between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from lninspect.render.format import Phrases, new_table, titled

Cell = str | tuple[str, ...]  # a tuple: items that break lines only between them
GAP = 2  # the space between two columns of new_table()
ITEMS = ", "  # what joins the items of a tuple cell


@dataclass(eq=False)
class Column:
    """A column's header and cells; `drop` makes it optional (1 is left out first), `wrap`
    lets its cells break lines (between words, or between a tuple's items)."""

    header: str
    cells: list[Cell] = field(default_factory=list)
    left: bool = False
    drop: int | None = None
    wrap: bool = False

    @property
    def minimum(self) -> int:
        """The narrowest it may be: its header, and its widest cell (word or item if it wraps)."""
        pieces = [piece for cell in self.cells for piece in _pieces(cell, self.wrap)]
        return max(map(cell_len, [self.header, *pieces]))

    @property
    def natural(self) -> int:
        """Its width with every cell on one line."""
        return max(map(cell_len, [self.header, *map(_joined, self.cells)]))


def _joined(cell: Cell) -> str:
    return cell if isinstance(cell, str) else ITEMS.join(cell)


def _pieces(cell: Cell, wrap: bool) -> list[str]:
    if isinstance(cell, tuple):
        return [f"{item}," for item in cell[:-1]] + list(cell[-1:]) if wrap else [_joined(cell)]
    return cell.split() if wrap and cell.strip() else [cell]


class FitTable:
    """A titled table (format.titled) of `columns` that shows the optional ones only where
    they fit the width it is rendered at (all of them with `wide`), and says which it left
    out and that --wide adds them (and `more`, what only --wide has); `ends` are the rows
    that close a section."""

    def __init__(
        self,
        title: str,
        columns: list[Column],
        caption: str = "",
        wide: bool = False,
        ends: frozenset[int] = frozenset(),
        more: str = "",
    ) -> None:
        self.title, self.columns, self.caption = title, columns, caption
        self.wide, self.ends, self.more = wide, ends, more

    def shown(self, width: int) -> list[Column]:
        """The columns at `width`: the optional ones left out in their order until the rest
        fits (where nothing more can go, the table is wider than `width`)."""
        columns = list(self.columns)
        optional = sorted((c for c in columns if c.drop is not None), key=lambda c: c.drop or 0)
        while not self.wide and optional and _width(columns, "minimum") > width:
            columns.remove(optional.pop(0))
        return columns

    def table(self, columns: list[Column]) -> Table:
        table = new_table()
        for column in columns:
            table.add_column(
                column.header,
                justify="left" if column.left else "right",
                no_wrap=not column.wrap,
                min_width=column.minimum,
            )
        rows = zip(*(c.cells for c in columns), strict=True) if columns else []
        for index, row in enumerate(rows):
            table.add_row(*map(_cell, row), end_section=index in self.ends)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = self.shown(options.max_width)
        note = self.note([c.header for c in self.columns if c not in shown])
        caption = "; ".join(part for part in (self.caption, note) if part)
        yield titled(self.table(shown), self.title, caption or None)

    def note(self, left: list[str]) -> str:
        """`out mean left out to fit the width; --wide adds it and the weights`."""
        if self.wide or not (left or self.more):
            return ""
        adds = ("them" if len(left) > 1 else "it") if left else ""
        adds = " and ".join(part for part in (adds, self.more) if part)
        return (
            f"{', '.join(left)} left out to fit the width; " if left else ""
        ) + f"--wide adds {adds}"

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """At least the columns that are not optional, each at its minimum; at most all."""
        required = [c for c in self.columns if c.drop is None or self.wide]
        return Measurement(_width(required, "minimum"), _width(self.columns, "natural"))


def _width(columns: list[Column], kind: str) -> int:
    return sum(getattr(c, kind) for c in columns) + GAP * max(0, len(columns) - 1)


def _cell(cell: Cell) -> RenderableType:
    return Phrases.of(list(cell), ITEMS) if isinstance(cell, tuple) else Text(cell)
