"""Per-token reductions that the hooks run on the device, always in float32, and the
gathering of their results to the CPU at the end of a run.

Each reduction takes full activations of shape (..., *hidden) and returns tensors of
shape (...): one number per token (and per head, for norms that see heads). Nothing
here keeps a reference to its input.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lninspect.statistics import FORWARD

Tensor = torch.Tensor


def hidden_flat(t: Tensor, reduced_dims: int) -> Tensor:
    """A detached view of `t` with its `reduced_dims` trailing axes merged into one."""
    return t.detach().flatten(-reduced_dims) if reduced_dims > 1 else t.detach()


class TokenMoments:
    """The per-token intermediates of one norm call that the statistics' reductions share
    (lninspect.statistics.Intermediates: its attributes are declared there).

    x and y are float32 views (..., d); no copy when already float32. The moments of each
    come from two passes (lninspect.hooks.reduce._moments): the mean, then the deviations
    from it, squared in place, whose mean is the variance and whose norm gives the fourth
    moment; one scratch (..., d) holds every tensor these passes write. std = sqrt(biased
    var + eps) of x (a LayerNorm's denominator), no eps for y. Max |x| and its dimension:
    |x| into the scratch, then its max; without `token_dims`, max |x| from the largest and
    smallest x (two passes that write nothing) and the dimension at the call's peak alone
    (peak_dim: the per-token index costs more than every other statistic of x).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        eps: float,
        reduced_dims: int = 1,
        token_dims: bool = True,
        real: Tensor | None = None,
    ) -> None:
        self.x = hidden_flat(x, reduced_dims).float()  # (..., d)
        self.y = hidden_flat(y, reduced_dims).float()
        scratch = torch.empty_like(self.x)
        self.mean, variance, self.kurtosis = _moments(self.x, scratch)  # (...) each
        self.std = (variance + eps).sqrt()
        fits = self.y.shape == self.x.shape  # a norm's output is shaped as its input
        self.out_mean, out_variance, self.out_kurtosis = _moments(self.y, scratch if fits else None)
        self.out_std = out_variance.sqrt()
        if token_dims:
            self.absmax, self.absmax_dim = torch.abs(self.x, out=scratch).max(dim=-1)
        else:  # max(largest, -smallest): NaN where a token has one, as abs().max()
            self.absmax = torch.maximum(self.x.amax(-1), self.x.amin(-1).neg())
            self.absmax_dim = peak_dim(self.x, self.absmax, real)

    @property
    def nonfinite(self) -> Tensor:
        """NaN and Inf entries of x per token: a pass of its own, made only when read."""
        return count_nonfinite(self.x)


def token_stats(
    x: Tensor,
    y: Tensor,
    eps: float,
    reduced_dims: int = 1,
    counts: bool = True,
    token_dims: bool = True,
    real: Tensor | None = None,
) -> dict[str, Tensor]:
    """The forward statistics (lninspect.statistics.FORWARD) of x and y, per token; without
    `counts`, not the non-finite count (a pass of its own, that a caller may not need);
    without `token_dims`, `absmax_dim` only at the largest finite |x| of the tokens that
    `real` (bool, (batch, tokens), None: all) keeps, -1 elsewhere (peak_dim).

    The one function of both paths: run as it is (eager) or through torch.compile
    (lninspect.hooks.fused). A token with a NaN or Inf entry has NaN (or Inf) statistics.
    """
    tokens = TokenMoments(x, y, eps, reduced_dims, token_dims, real)
    return {
        s.key: s.reduce(tokens)
        for s in FORWARD
        if s.reduce is not None and (counts or s.unit != "count")
    }


def _moments(t: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token mean, biased variance and excess kurtosis of `t` (..., d), in two passes.

    The deviations from the float mean are exact to rounding however large the mean is
    against the spread (a one-pass form, x * rstd - mean * rstd, loses |mean| / std ulps).
    The variance is the corrected two-pass one, mean(dev^2) - mean(dev)^2 (Chan, Golub &
    LeVeque 1983): the second term removes the float mean's own error, and is what makes it
    exactly 0 for a constant token whose float mean is an ulp off (the deviations are then
    all equal). The kurtosis is mean(dev^4) / var^2 - 3, NaN where var = 0 (0 / 0).
    """
    mean = t.mean(-1)
    deviation = torch.sub(t, mean.unsqueeze(-1), out=out)  # (..., d), squared in place below
    drift = deviation.mean(-1)
    squares = deviation.square_()
    variance = (squares.mean(-1) - drift.square()).clamp_(min=0)
    fourth = torch.linalg.vector_norm(squares, dim=-1).square_() / t.shape[-1]  # mean(dev^4)
    kurtosis = torch.where(variance > 0, fourth / variance.square(), float("nan")) - 3
    return mean, variance, kurtosis


def peak_dim(x: Tensor, absmax: Tensor, real: Tensor | None) -> Tensor:
    """`absmax_dim` (int64, shaped as `absmax`) at the token of the largest finite |x| alone,
    -1 at every other: the argmax of one row of x (..., d) instead of every token's.

    The token is the first of the largest among the finite entries of `absmax` that `real`
    keeps (pad tokens passed over when its (batch, tokens) fits), as lninspect.derived's
    largest_abs picks it on the host; everything stays on the device (no host sync).
    """
    candidates = absmax.nan_to_num(nan=-1.0, posinf=-1.0)  # below every |x|
    if real is not None and tuple(real.shape) == tuple(absmax.shape[:2]):
        keep = real.bool().view(*real.shape, *[1] * (absmax.ndim - 2))
        candidates = candidates.masked_fill(~keep, -1.0)
    token = candidates.reshape(-1).argmax(0, keepdim=True)  # (1,): no 0-d index, no sync
    row = x.reshape(-1, x.shape[-1]).index_select(0, token)  # (1, d); a view unless strided
    dims = torch.full((absmax.numel(),), -1, dtype=torch.int64, device=x.device)
    return dims.scatter_(0, token, row.abs().argmax(-1)).view(absmax.shape)


def count_nonfinite(t: Tensor) -> Tensor:
    """How many entries of each token of t (..., d) are NaN or Inf (int32).

    t * 0 is 0 where t is finite and NaN elsewhere; mapping NaN to 1 and summing counts
    them in one cheap pass (a boolean isfinite reduction costs several times more).
    """
    return (t * 0).nan_to_num(nan=1.0, posinf=1.0, neginf=1.0).sum(-1).int()


@torch.no_grad()
def token_nonfinite(t: Tensor, reduced_dims: int = 1) -> Tensor:
    """How many entries of each token are NaN or Inf (int32): count_nonfinite."""
    return count_nonfinite(hidden_flat(t, reduced_dims).float())


@torch.no_grad()
def token_norm(g: Tensor, reduced_dims: int = 1) -> Tensor:
    """The L2 norm of `g` over its hidden axis, per token, accumulated in float32."""
    return torch.linalg.vector_norm(hidden_flat(g, reduced_dims), dim=-1, dtype=torch.float32)


def gather_record(records: list[dict[str, Tensor]]) -> dict[str, np.ndarray]:
    """Concatenate per-call records along the sequence axis and move them to the CPU."""
    return {key: gather([r[key] for r in records]) for key in records[0]}


def gather(tensors: list[Tensor]) -> np.ndarray:
    """Concatenate along axis 0 on the device, then copy to the CPU once.

    Shorter token axes (axis 1) are padded with NaN, or -1 for integer indices and counts.
    """
    if len(tensors) > 1 and tensors[0].ndim >= 2 and len({t.shape[1:] for t in tensors}) > 1:
        width = max(t.shape[1] for t in tensors)
        fill = float("nan") if tensors[0].is_floating_point() else -1
        tensors = [
            F.pad(t, [0, 0] * (t.ndim - 2) + [0, width - t.shape[1]], value=fill) for t in tensors
        ]
    joined = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
    return joined.cpu().numpy()
