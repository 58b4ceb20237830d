"""What each norm reads and where a value sits: the groups of norms (stream, role,
placement) every view selects by, the heatmap panels and depth series they make, and the one
Location (sequence, token, head) of a per-token value. No torch."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from lninspect.results import NormDescription, NormStats, StatsResult
from lninspect.results.aggregate import AggregateResult, NormAggregate
from lninspect.roles import group_label, group_order

CensusNorm = NormStats | NormAggregate  # a norm with a census: of one run, or of a corpus


@dataclass(frozen=True)
class Location:
    """Where a per-token value sits: its sequence, token and, for a norm that sees heads (a
    q/k norm), its head. The one way every table, caption, hover and JSON names a place."""

    sequence: int
    token: int
    head: int | None = None


def canonical(norm: NormStats, values: np.ndarray) -> np.ndarray:
    """A norm's per-token array as (sequences, tokens, heads): a (tokens,) or (sequences,
    tokens) array gets one head; the token axis of a q/k norm is its recorded `token_axis`
    (Gemma 3's arrays are (sequences, heads, tokens)), its other axes are heads."""
    array = np.asarray(values)
    if array.ndim <= 1:
        return array.reshape(1, -1, 1)
    if array.ndim == 2:
        return array[:, :, None]
    moved = np.moveaxis(array, norm.token_axis or 1, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def location(norm: NormStats, index: tuple[int, ...]) -> Location:
    """The Location of an index into a norm's per-token arrays (module order)."""
    shape = np.shape(norm.input.mean)
    if len(index) <= 1:
        return Location(0, int(index[0]) if index else 0)
    if len(index) == 2:
        return Location(int(index[0]), int(index[1]))
    axis = norm.token_axis or 1
    heads = [n for a, n in enumerate(shape) if a not in (0, axis)]
    head = np.ravel_multi_index([i for a, i in enumerate(index) if a not in (0, axis)], heads)
    return Location(int(index[0]), int(index[axis]), int(head))


@dataclass(frozen=True)
class Group:
    """Norms that read the same stream at the same place of a block: what every view that
    speaks of the residual stream, of "before attention" or of a role selects by."""

    reads: str  # lninspect.roles.STREAMS
    role: str
    placement: str

    @property
    def label(self) -> str:
        return group_label(self.reads, self.role, self.placement)

    @property
    def residual(self) -> bool:
        return self.reads == "residual"


def group_of(norm: NormDescription) -> Group:
    return Group(norm.reads, norm.role, norm.placement)


def groups_present(result: StatsResult | AggregateResult) -> list[Group]:
    """The groups of the result's norms, in block order (by role, pre before post)."""
    found = {group_of(n) for n in result.norms}
    return sorted(found, key=lambda g: (*group_order(g.role, g.placement), g.reads))


@overload
def norms_of_group(result: StatsResult, group: Group) -> list[NormStats]: ...
@overload
def norms_of_group(result: AggregateResult, group: Group) -> list[NormAggregate]: ...
def norms_of_group(
    result: StatsResult | AggregateResult, group: Group
) -> list[NormStats] | list[NormAggregate]:
    """The norms of one group, in layer order (norms outside the blocks last)."""
    found: list[Any] = [n for n in result.norms if group_of(n) == group]
    return sorted(found, key=lambda n: math.inf if n.layer is None else n.layer)


@dataclass
class Panel:
    """One panel of a modules x tokens heatmap: norms of one group and module name, one row
    per layer (`layered`), or the norms outside the blocks, one row per name."""

    title: str
    norms: list[NormStats]
    layered: bool


def leaf_of(norm: NormDescription) -> str:
    """The module's own name, the last part of its path: `input_layernorm`, `q_norm`."""
    return norm.name.rsplit(".", 1)[-1]


def by_leaf(norms: list[NormStats]) -> dict[str, list[NormStats]]:
    """The norms by module name, in the order the names first appear (q_norm, k_norm)."""
    found: dict[str, list[NormStats]] = {}
    for norm in norms:
        found.setdefault(leaf_of(norm), []).append(norm)
    return found


def heatmap_panels(result: StatsResult) -> list[Panel]:
    """Every norm in one panel: one per group and module name inside the blocks, in block
    order (Gemma's q_norm and k_norm apart), then the norms outside them (final, embed)."""
    panels: list[Panel] = []
    for group in groups_present(result):
        inside = [n for n in norms_of_group(result, group) if n.layer is not None]
        for leaf, rows in by_leaf(inside).items():
            panels.append(Panel(f"{leaf} ({group.label})", rows, layered=True))
    outside = [n for n in result.norms if n.layer is None]
    if outside:
        panels.append(Panel("outside the blocks", outside, layered=False))
    return panels


def token_row(norm: NormStats, values: np.ndarray, sequence: int = 0) -> np.ndarray:
    """One sequence's per-token values of `norm` as (tokens,); heads are reduced by median."""
    row = canonical(norm, values)[sequence]  # (tokens, heads)
    if row.shape[1] == 1:
        return row[:, 0].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN padding
        return np.nanmedian(row, axis=1).astype(np.float64)


def residual_norms(result: StatsResult | AggregateResult) -> list[CensusNorm]:
    """The norms that read the residual stream, in model order."""
    return [n for n in result.norms if n.reads == "residual"]


def depth_series(result: StatsResult, reads: str) -> list[tuple[Group, str, list[NormStats]]]:
    """(group, module name, norms) per line of a by-depth view of the norms that read
    `reads`: one line per group and module name, in block order; a residual view also has
    the final norm (a point after the last layer)."""
    return [
        (group, leaf, norms)
        for group in groups_present(result)
        if group.reads == reads
        for leaf, norms in by_leaf(norms_of_group(result, group)).items()
    ]
