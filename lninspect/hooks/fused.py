"""The per-token reductions compiled into one pass per norm, and the choice of the path.

On a GPU the eager reductions (lninspect.hooks.reduce) cost many passes and kernel launches
per norm: a float32 copy of a bfloat16 activation, the moments' subtractions and squares,
abs and max, the non-finite count's passes (2-3.5x the model's own time on an H200 when
last measured, although the arithmetic is a few percent of what the matmuls do). The same
function, `token_stats` (every reduction of lninspect.statistics), run through
torch.compile, fuses into a kernel that reads x and y without writing anything between,
accumulating in float32 from the model's dtype without a float32 copy.

`Reductions` picks, per capture: "eager", "compiled" or "auto" (compiled on CUDA, eager
elsewhere: on the CPU the fused pass is 1.5-3.5 times faster than the eager one at width
256, in a training step and alone, but its compile, 4-17 s a process, pays for itself only
after hundreds of recorded steps; docs/training.md, "Cost"). A caller that leaves out the
non-finite counts or the per-token dimensions gets a compiled function without them (on the
CPU the two tripled the compiled pass's time at width 256). Every axis is dynamic, so
corpus batches, --stride windows and training steps of any length reuse one compiled kernel
per (device type, dtype, rank), and the per-token shape comes out of the kernel as it is (no
reshape per call: at batch 1 a GPU waits on the host's calls). A compile is announced in
one log line (logger "lninspect"); a failure falls back to eager for the rest of the
process, with the reason at debug level (`lninspect --debug`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.fx.experimental import _config as _shape_config

from lninspect.hooks.reduce import token_nonfinite, token_norm, token_stats
from lninspect.options import Reductions as Modes
from lninspect.options import choices
from lninspect.statistics import FORWARD

Tensor = torch.Tensor
MODES = choices(Modes)
# The forward statistics' keys by dtype, in declaration order: one stacked output per dtype.
DTYPES = tuple(dict.fromkeys(s.dtype for s in FORWARD))
GROUPS = tuple(tuple(s.key for s in FORWARD if s.dtype == dtype) for dtype in DTYPES)
COUNTS = tuple(s.key for s in FORWARD if s.unit == "count")  # left out without `counts`
UNCOUNTED = tuple(g for g in (tuple(k for k in keys if k not in COUNTS) for keys in GROUPS) if g)
log = logging.getLogger("lninspect")


def stacked_stats(
    x: Tensor,
    y: Tensor,
    eps: float,
    reduced_dims: int = 1,
    counts: bool = True,
    token_dims: bool = True,
    real: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """token_stats(x, y, ...) stacked by dtype (groups(counts)): the function torch.compile
    fuses.

    One output per dtype (float32, int64, int32), not one per statistic: each output of a
    compiled function costs the host time on every call. The per-token shape comes out of
    the kernel as it is: no reshape per call.
    """
    record = token_stats(x, y, eps, reduced_dims, counts, token_dims, real)
    return tuple(torch.stack([record[key] for key in keys]) for keys in groups(counts))


def groups(counts: bool = True) -> tuple[tuple[str, ...], ...]:
    """The statistics' keys of each stacked output: GROUPS, or without `counts` UNCOUNTED."""
    return GROUPS if counts else UNCOUNTED


def as_record(values: tuple[Tensor, ...], counts: bool = True) -> dict[str, Tensor]:
    """stacked_stats' outputs as a record keyed by statistic: views, no copy."""
    return {
        key: value
        for keys, stacked in zip(groups(counts), values, strict=True)
        for key, value in zip(keys, stacked.unbind(0), strict=True)
    }


def fused_grad(g: Tensor, reduced_dims: int = 1) -> tuple[Tensor, Tensor]:
    """|g| (..., *hidden) per token in float32 and its NaN / Inf count: the eager reductions
    of a gradient, together, for torch.compile to fuse into one pass."""
    return token_norm(g, reduced_dims), token_nonfinite(g, reduced_dims)


class Reductions:
    """The per-token reductions of one capture: eager or compiled, chosen once per device."""

    def __init__(self, mode: str = "auto", counts: bool = True, token_dims: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"reductions must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        # the non-finite counts, and absmax_dim at every token rather than at the peak alone
        # (lninspect.hooks.reduce.token_stats): work of their own on either path
        self.counts = counts
        self.token_dims = token_dims
        # each variant is a compiled function of its own (its graph, not a recompile)
        self.compiled_name = "stats" + ("" if counts else ", no counts")
        self.compiled_name += "" if token_dims else ", peak dim only"

    def compiled_on(self, device: torch.device) -> bool:
        """Whether this device gets the compiled pass (and it has not failed before)."""
        wanted = self.mode == "compiled" or (self.mode == "auto" and device.type == "cuda")
        return wanted and not _COMPILED.failed

    @torch.no_grad()
    def stats(
        self, x: Tensor, y: Tensor, eps: float, reduced_dims: int, real: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The forward statistics of one norm call (lninspect.statistics), per token;
        `real`: the call's real tokens, for the peak's dimension without `token_dims`."""
        options = (self.counts, self.token_dims, None if self.token_dims else real)
        if self.compiled_on(x.device):
            x, y = x.detach(), y.detach()  # not views: a view's base would be guarded too
            values = _COMPILED.call(
                self.compiled_name, stacked_stats, x, y, float(eps), reduced_dims, *options
            )
            if values is not None:
                return as_record(values, self.counts)
        return token_stats(x, y, eps, reduced_dims, *options)

    @torch.no_grad()
    def grad(self, g: Tensor, reduced_dims: int, count: bool) -> tuple[Tensor, Tensor | None]:
        """|g| per token and, when `count` (and `counts`), its NaN / Inf entries per token.

        Compiled only to fuse the count with the norm: a norm alone is one eager kernel, and
        a compiled call costs the host more per call (on the CPU, about twice the eager norm)."""
        count = count and self.counts
        if count and self.compiled_on(g.device):
            values = _COMPILED.call("grad", fused_grad, g.detach(), reduced_dims)
            if values is not None:
                return values
        return token_norm(g, reduced_dims), token_nonfinite(g, reduced_dims) if count else None


class _Compiled:
    """The compiled functions of this process, made on first use; off after any failure."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[..., Any]] = {}
        self.announced: set[tuple[str, str, torch.dtype, int]] = set()
        self.failed = False

    def call(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        """function(*args) through torch.compile; None (and eager from now on) on failure."""
        first = args[0]
        key = (name, first.device.type, first.dtype, first.ndim)
        if key not in self.announced:
            self.announced.add(key)
            log.info(
                "compiling the fused per-token reductions (%s, %s on %s, %d axes): once a process",
                name,
                str(first.dtype).removeprefix("torch."),
                first.device.type,
                first.ndim,
            )
        try:
            if name not in self.functions:
                self.functions[name] = torch.compile(function, dynamic=True, fullgraph=True)
            return _size_oblivious(self.functions[name], args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager path is exact
            self.failed = True
            log.info("compiled reductions unavailable, using eager ones (the DEBUG log says why)")
            log.debug("torch.compile failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            return None


def _size_oblivious(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """function(*args) with sizes of 1 treated like any other size, where torch allows it.

    Dynamic shapes otherwise give a size of 1 a graph of its own, so that a batch of one
    text, or a corpus's last batch of one sequence, would compile again. Set for this call
    only, so that the user's own compiled code is left as it is.
    """
    if not hasattr(_shape_config, "backed_size_oblivious"):
        return function(*args)
    before = _shape_config.backed_size_oblivious
    _shape_config.backed_size_oblivious = True
    try:
        return function(*args)
    finally:
        _shape_config.backed_size_oblivious = before


_COMPILED = _Compiled()
