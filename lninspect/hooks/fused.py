"""The per-token reductions in one pass per norm, and the choice between them and the eager ones.

On a GPU the eager reductions (lninspect.hooks.reduce) cost many passes and kernel launches
per norm: a float32 copy of a bfloat16 activation, native_layer_norm's discarded output,
abs, max, three passes for the non-finite count. That is 2-3.5x the model's own time on an
H200, although the arithmetic is a few percent of what the matmuls do. Written as one
function, torch.compile fuses the same numbers into a kernel that reads x and y once,
accumulating in float32 from the model's dtype without a float32 copy:

    var, mean = var_mean(x)       (Welford, biased)     std = sqrt(var + eps)
    rms = sqrt(var + mean^2 + eps)                      absmax, absmax_dim = max |x|
    out_var, out_mean = var_mean(y)                     nonfinite = count of NaN / Inf in x

`Reductions` picks, per capture: "eager" (the CPU default: native_layer_norm is ten times
faster than var_mean there), "compiled" (the CUDA default) or "auto". Inputs are flattened to
(tokens, d) and the token axis is dynamic, so corpus batches, --stride windows and training
steps reuse one compiled kernel per (device type, dtype). A compile is announced in one log
line (logger "lninspect"); a failure falls back to eager for the rest of the process, with
the reason at debug level (`lninspect --debug`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from lninspect.hooks.reduce import hidden_flat, token_nonfinite, token_norm, token_stats

Tensor = torch.Tensor
MODES = ("auto", "eager", "compiled")
STAT_KEYS = ("mean", "std", "rms", "absmax", "absmax_dim", "out_mean", "out_std", "nonfinite")
log = logging.getLogger("lninspect")


def fused_stats(x: Tensor, y: Tensor, eps: float) -> tuple[Tensor, ...]:
    """The STAT_KEYS of x and y, both (tokens, d), in one pass each: (tokens,) tensors."""
    xf, yf = x.float(), y.float()  # fused into the loads when compiled: no float32 copy
    var, mean = torch.var_mean(xf, dim=-1, correction=0)
    absmax, absmax_dim = xf.abs().max(dim=-1)
    out_var, out_mean = torch.var_mean(yf, dim=-1, correction=0)
    nonfinite = (~torch.isfinite(xf)).sum(dim=-1, dtype=torch.int32)
    std = torch.sqrt(var + eps)
    rms = torch.sqrt(var + mean * mean + eps)
    return mean, std, rms, absmax, absmax_dim, out_mean, torch.sqrt(out_var), nonfinite


def fused_grad(g: Tensor) -> tuple[Tensor, Tensor]:
    """The L2 norm of g (tokens, d) per token, in float32, and its NaN / Inf count: one pass."""
    gf = g.float()
    norm = torch.sqrt((gf * gf).sum(dim=-1))
    return norm, (~torch.isfinite(gf)).sum(dim=-1, dtype=torch.int32)


class Reductions:
    """The per-token reductions of one capture: eager or compiled, chosen once per device."""

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"reductions must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode

    def compiled_on(self, device: torch.device) -> bool:
        """Whether this device gets the compiled pass (and it has not failed before)."""
        wanted = self.mode == "compiled" or (self.mode == "auto" and device.type == "cuda")
        return wanted and not _COMPILED.failed

    @torch.no_grad()
    def stats(self, x: Tensor, y: Tensor, eps: float, reduced_dims: int) -> dict[str, Tensor]:
        """The forward statistics of one norm call (lninspect.statistics), per token."""
        if self.compiled_on(x.device):
            x2, y2 = _tokens(x, reduced_dims), _tokens(y, reduced_dims)  # (tokens, d)
            values = _COMPILED.call("stats", fused_stats, x2, y2, float(eps))
            if values is not None:
                lead = hidden_flat(x, reduced_dims).shape[:-1]
                return {k: v.reshape(lead) for k, v in zip(STAT_KEYS, values, strict=True)}
        return token_stats(x, y, eps, reduced_dims)

    @torch.no_grad()
    def grad(self, g: Tensor, reduced_dims: int, count: bool) -> tuple[Tensor, Tensor | None]:
        """|g| per token and, when `count`, its NaN / Inf entries per token."""
        if self.compiled_on(g.device):
            values = _COMPILED.call("grad", fused_grad, _tokens(g, reduced_dims))
            if values is not None:
                lead = hidden_flat(g, reduced_dims).shape[:-1]
                norm, nonfinite = (v.reshape(lead) for v in values)
                return norm, nonfinite if count else None
        norm = token_norm(g, reduced_dims)
        return norm, token_nonfinite(g, reduced_dims) if count else None


def _tokens(t: Tensor, reduced_dims: int) -> Tensor:
    """`t` as (tokens, d): a view for the usual contiguous activations."""
    flat = hidden_flat(t, reduced_dims)
    return flat.reshape(-1, flat.shape[-1])


class _Compiled:
    """The compiled functions of this process, made on first use; off after any failure."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[..., Any]] = {}
        self.announced: set[tuple[str, str, torch.dtype]] = set()
        self.failed = False

    def call(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        """function(*args) through torch.compile; None (and eager from now on) on failure."""
        first = args[0]
        key = (name, first.device.type, first.dtype)
        if key not in self.announced:
            self.announced.add(key)
            log.info(
                "compiling the fused per-token reductions (%s, %s on %s): once per process",
                name,
                str(first.dtype).removeprefix("torch."),
                first.device.type,
            )
        try:
            if name not in self.functions:
                self.functions[name] = torch.compile(function, dynamic=True, fullgraph=True)
            return self.functions[name](*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager path is exact
            self.failed = True
            log.info("compiled reductions unavailable, using eager ones (--debug: why)")
            log.debug("torch.compile failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            return None


_COMPILED = _Compiled()
