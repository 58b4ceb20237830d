"""The norm layouts the placement experiment compares: one declaration each (no torch).

A layout says where the norms of a residual sub-layer sit and what scales the stream
(`sublayer`, a function of duck-typed tensors), the norms a sub-layer has and what each
reads, whether a final norm precedes the head, its initialization rule (`branch_gain`, the
Xavier gain of the branch projections) and how a figure draws it. The reference GPT
(lninspect.placement.refgpt) runs it, the experiment measures it, and the results, tables,
figures, memory estimate and docs read it from LAYOUTS: adding a layout is one entry here
(and its test).

This vocabulary is the experiment's own: lninspect.roles.PLACEMENTS ("pre" / "post") says
where a discovered norm sits in a real model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

X = Any  # a tensor (torch in the model, float64 in the tests' references)
Fn = Callable[[X], X]
# One residual sub-layer: (stream x, branch f, the sub-layer's norms, residual scale alpha,
# dropout on what joins the stream) -> the stream after it.
Sublayer = Callable[[X, Fn, Sequence[Fn], float, Fn], X]
# The projections DeepNet's rule scales (Wang et al. 2022, Sec. 3.1): value, attention
# output, and the MLP's two weights; queries and keys keep gain 1.
BRANCH_WEIGHTS = ("attn.v", "attn.out", "mlp.fc_in", "mlp.fc_out")
SUBLAYERS = (1, 2)  # attention, then the MLP: their norms are ln_1*, ln_2*
FINAL = "ln_f"


def _one(_: int) -> float:
    return 1.0


@dataclass(frozen=True)
class Layout:
    """Where a block's norms sit, how the stream is scaled and initialized, how it is drawn."""

    name: str  # what --placements takes and the results are keyed by
    label: str  # in tables and legends
    description: str  # one line, for --help, the tables and the docs
    sublayer: Sublayer
    norms: tuple[str, ...]  # a sub-layer's norms, by suffix: "" is ln_1, "_post" ln_1_post
    reads: tuple[str, ...]  # what each reads (lninspect.roles.STREAMS): residual | sublayer
    final: bool  # a final norm (ln_f) before the LM head
    color: str  # a matplotlib colour, the same in every figure
    linestyle: str | tuple[int, tuple[int, ...]]  # matplotlib's: "-" or (offset, dashes)
    marker: str
    residual_scale: Callable[[int], float] = _one  # alpha(L) on the stream x
    branch_gain: Callable[[int], float] = _one  # beta(L): Xavier gain of BRANCH_WEIGHTS
    norm_scale: Callable[[int], float] = _one  # factor on a block norm's output at layer l >= 1
    norm: str | None = None  # the norm it uses whatever --norm says (DyT), or None

    def block_norms(self) -> list[str]:
        """The norms of one block in the order the stream meets them: ln_1, ln_1_post, ..."""
        return [f"ln_{k}{suffix}" for k in SUBLAYERS for suffix in self.norms]

    def norm_keys(self) -> list[str]:
        """Every norm's leaf name: the block's, then ln_f if there is one."""
        return self.block_norms() + ([FINAL] if self.final else [])

    def residual_keys(self) -> list[str]:
        """The leaf names of the norms that read the residual stream (ln_f among them)."""
        block = [
            f"ln_{k}{suffix}"
            for k in SUBLAYERS
            for suffix, reads in zip(self.norms, self.reads, strict=True)
            if reads == "residual"
        ]
        return block + ([FINAL] if self.final else [])


def _pre(x: X, f: Fn, n: Sequence[Fn], alpha: float, drop: Fn) -> X:
    return x + drop(f(n[0](x)))


def _post(x: X, f: Fn, n: Sequence[Fn], alpha: float, drop: Fn) -> X:
    return n[0](alpha * x + drop(f(x)))


def _peri(x: X, f: Fn, n: Sequence[Fn], alpha: float, drop: Fn) -> X:
    return x + drop(n[1](f(n[0](x))))


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "pre", "pre-LN", "x + f(N(x)), final norm (GPT-2; Xiong et al. 2020)",
            sublayer=_pre, norms=("",), reads=("residual",), final=True,
            color="tab:blue", linestyle="-", marker="o",
        ),
        Layout(
            "post", "post-LN", "N(x + f(x)), no final norm (Vaswani et al. 2017)",
            sublayer=_post, norms=("",), reads=("residual",), final=False,
            color="tab:red", linestyle="--", marker="s",
        ),
        Layout(
            "peri", "peri-LN", "x + N2(f(N1(x))), final norm (Gemma 2/3; Kim et al. 2025)",
            sublayer=_peri, norms=("", "_post"), reads=("residual", "sublayer"), final=True,
            color="tab:green", linestyle="-.", marker="^",
        ),
        Layout(
            "deepnorm", "DeepNorm",
            "N(αx + f(x)), α = (2L)^¼, branch weights gain (8L)^-¼ (Wang et al. 2022)",
            residual_scale=lambda layers: (2 * layers) ** 0.25,
            branch_gain=lambda layers: (8 * layers) ** -0.25,
            sublayer=_post, norms=("",), reads=("residual",), final=False,
            color="tab:purple", linestyle=(0, (5, 1)), marker="D",
        ),
        Layout(
            "lns", "LNS", "pre-LN, block l's norms scaled by 1/sqrt(l) (Sun et al. 2025)",
            norm_scale=lambda layer: 1 / math.sqrt(layer),
            sublayer=_pre, norms=("",), reads=("residual",), final=True,
            color="tab:orange", linestyle=(0, (1, 1)), marker="v",
        ),
        Layout(
            "dyt", "DyT", "pre-LN, every norm γ·tanh(αx) + β, α₀ = 0.5 (Zhu et al. 2025)",
            sublayer=_pre, norms=("",), reads=("residual",), final=True, norm="dyt",
            color="tab:brown", linestyle=(0, (3, 1, 1, 1)), marker="P",
        ),
    )
}  # fmt: skip
DEFAULT_BASELINE = "pre"


def layout_named(name: str) -> Layout:
    """The declaration of `name`; ValueError naming the known ones otherwise."""
    if name not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {name!r}")
    return LAYOUTS[name]


def markdown_table() -> str:
    """The layouts as a Markdown table: docs/placement.md's generated block `layouts`."""
    rows = ["| layout | `--placements` | block and initialization |", "|---|---|---|"]
    rows += [f"| {x.label} | `{x.name}` | {x.description} |" for x in LAYOUTS.values()]
    return "\n".join(rows)
