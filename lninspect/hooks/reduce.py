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

from lninspect.statistics import FORWARD, count_nonfinite

Tensor = torch.Tensor


def hidden_flat(t: Tensor, reduced_dims: int) -> Tensor:
    """A detached view of `t` with its `reduced_dims` trailing axes merged into one."""
    return t.detach().flatten(-reduced_dims) if reduced_dims > 1 else t.detach()


class Tokens:
    """The per-token intermediates of one norm call that the statistics' reductions share.

    x and y are float32 views (..., d); no copy when already float32. Mean and std =
    sqrt(biased var + eps) come from `torch.native_layer_norm` itself (its mean and rstd:
    LayerNorm's own numbers, computed in one Welford pass, and on the CPU ten times faster
    than `var_mean`; compiled, inductor reduces it to one pass with the rest). The output's
    mean and std (no eps) the same way; max |x| and its dimension in one pass.
    """

    x: Tensor  # (..., d) float32
    y: Tensor
    mean: Tensor  # (...) of x
    std: Tensor
    out_mean: Tensor  # (...) of y
    out_std: Tensor
    absmax: Tensor
    absmax_dim: Tensor  # int64

    def __init__(self, x: Tensor, y: Tensor, eps: float, reduced_dims: int = 1) -> None:
        self.x = hidden_flat(x, reduced_dims).float()  # (..., d)
        self.y = hidden_flat(y, reduced_dims).float()
        self.mean, self.std = _mean_std(self.x, eps)  # (...) each
        self.out_mean, self.out_std = _mean_std(self.y, 0.0)
        self.absmax, self.absmax_dim = self.x.abs().max(dim=-1)


def token_stats(
    x: Tensor, y: Tensor, eps: float, reduced_dims: int = 1, counts: bool = True
) -> dict[str, Tensor]:
    """The forward statistics (lninspect.statistics.FORWARD) of x and y, per token; without
    `counts`, not the non-finite count (a pass of its own, that a caller may not need).

    The one function of both paths: run as it is (eager) or through torch.compile
    (lninspect.hooks.fused). A token with a NaN or Inf entry has NaN (or Inf) statistics.
    """
    tokens = Tokens(x, y, eps, reduced_dims)
    return {
        s.key: s.reduce(tokens)
        for s in FORWARD
        if s.reduce is not None and (counts or s.unit != "count")
    }


def _mean_std(t: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-token mean and sqrt(biased var + eps) of `t` (..., d), as LayerNorm computes them."""
    _, mean, rstd = torch.native_layer_norm(t, t.shape[-1:], None, None, eps)  # (..., 1) each
    return mean.squeeze(-1), rstd.squeeze(-1).reciprocal()  # 1 / inf = 0 when var + eps = 0


@torch.no_grad()
def token_nonfinite(t: Tensor, reduced_dims: int = 1) -> Tensor:
    """How many entries of each token are NaN or Inf (int32): statistics.count_nonfinite."""
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
