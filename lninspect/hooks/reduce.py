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

Tensor = torch.Tensor


def hidden_flat(t: Tensor, reduced_dims: int) -> Tensor:
    """A detached view of `t` with its `reduced_dims` trailing axes merged into one."""
    return t.detach().flatten(-reduced_dims) if reduced_dims > 1 else t.detach()


@torch.no_grad()
def token_stats(x: Tensor, y: Tensor, eps: float, reduced_dims: int = 1) -> dict[str, Tensor]:
    """Statistics of a norm's input x and output y, per token, in float32.

    Mean and std = sqrt(biased var + eps) come from `torch.native_layer_norm` itself (its
    mean and rstd: LayerNorm's own numbers, computed in one Welford pass, and on the CPU ten
    times faster than `var_mean`). rms = sqrt(mean(x^2) + eps) = sqrt(std^2 + mean^2) needs
    no pass of its own. `nonfinite` counts the NaN and Inf entries of x; the statistics of a
    token that has any are NaN (or Inf).
    """
    x = hidden_flat(x, reduced_dims).float()  # (..., d); no copy when already float32
    y = hidden_flat(y, reduced_dims).float()
    mean, std = _mean_std(x, eps)
    absmax, absmax_dim = x.abs().max(dim=-1)
    out_mean, out_std = _mean_std(y, 0.0)
    return {
        "mean": mean,
        "std": std,
        "rms": torch.hypot(std, mean),
        "absmax": absmax,
        "absmax_dim": absmax_dim,
        "out_mean": out_mean,
        "out_std": out_std,
        "nonfinite": token_nonfinite(x),
    }


def _mean_std(t: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-token mean and sqrt(biased var + eps) of `t` (..., d), as LayerNorm computes them."""
    _, mean, rstd = torch.native_layer_norm(t, t.shape[-1:], None, None, eps)  # (..., 1) each
    return mean.squeeze(-1), rstd.squeeze(-1).reciprocal()  # 1 / inf = 0 when var + eps = 0


@torch.no_grad()
def token_nonfinite(t: Tensor, reduced_dims: int = 1) -> Tensor:
    """How many entries of each token are NaN or Inf (int32).

    t * 0 is 0 where t is finite and NaN elsewhere; mapping NaN to 1 and summing counts
    them in one cheap pass (a boolean isfinite reduction costs several times more).
    """
    flags = (hidden_flat(t, reduced_dims).float() * 0).nan_to_num(nan=1.0, posinf=1.0, neginf=1.0)
    return flags.sum(-1).to(torch.int32)


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
