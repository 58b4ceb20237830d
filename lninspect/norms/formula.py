"""What a normalization module computes, measured on probe vectors rather than read off names.

Class names do not always say it: T5's `T5LayerNorm` is an RMSNorm, Gemma's RMSNorm
multiplies by 1 + weight, OLMo's LayerNorm has no parameters and keeps its eps in the code.
A float32 copy of the module runs on a fixed input with a large mean, and its output is
compared with every candidate formula

    layernorm:  y = (x - mean) / sqrt(var + eps) * (offset + w) + b
    rmsnorm:    y = x / sqrt(mean(x^2) + eps) * (offset + w) + b

for offset 0 or 1 and reductions over the last 1 .. n axes; the candidates differ by O(1),
so the match is unambiguous. The gain w is the module's `weight`, else its one parameter
not named as a bias (a ScaleNorm's scalar `g`); a 0-d gain broadcasts like a vector one. The
probe's width is the module's normalized_shape, else its gain's shape, else the width of
the input the dataflow pass saw it receive (lninspect.norms.dataflow), else the model
config's hidden size. A module that keeps its eps nowhere readable gets it measured
from a second input whose variance is close to eps (resolution 1e-11: EPS_RESOLUTION).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn

Tensor = torch.Tensor

MATCH_TOLERANCE = 1e-3  # relative; wrong candidates are off by O(1)
EPS_PROBE_VARIANCE = 1e-5  # variance of the eps probe: eps near it is resolved best
# what that probe resolves: float32 rounding of the module's output, some ulps of a mean
# square near EPS_PROBE_VARIANCE; a measured eps below it is 0 (other CPU kernels, other noise)
EPS_RESOLUTION = 1e-11
BIAS_NAMES = ("bias", "beta", "b", "shift")  # parameter names read as the additive term


class ProbeFailed(Exception):
    """Why a module's formula could not be measured (turned into a note by discovery)."""


@dataclass(frozen=True)
class Formula:
    """The formula a norm module computes, as measured."""

    kind: str  # "layernorm" or "rmsnorm"
    weight_offset: float  # 1.0 when the module multiplies by 1 + weight (Gemma)
    reduced_dims: int  # how many trailing axes it normalizes over
    eps: float | None  # measured eps; None when eps was given (or could not be measured)


def measure_formula(
    module: nn.Module, eps: float | None, reduced_dims: int | None, width: int | None = None
) -> Formula:
    """The formula `module` computes; ProbeFailed says why when it cannot be measured.

    `eps` is the module's own eps when it has one (then only the formula is measured);
    `reduced_dims` is fixed when the module states its normalized shape; `width` is the
    size of the last axis of its input when known (the dataflow pass, the config).
    """
    shape = probe_shape(module, width)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        raise ProbeFailed("its weights are on the meta device")
    gain, shift = affine_names(module)
    with torch.no_grad():
        try:  # a float32 copy, so that the module's own weights and state stay as they are
            clone = copy.deepcopy(module).float()
            weight, bias = _param(clone, gain), _param(clone, shift)
            x = _probe_input(shape, weight)
            y = clone.forward(x)  # .forward: no hooks of the original run
        except Exception as exc:  # noqa: BLE001 - a user's module may raise anything; reported
            raise ProbeFailed(f"its forward on a float32 probe raised {_first_line(exc)}") from exc
        if not isinstance(y, Tensor) or y.shape != x.shape:
            raise ProbeFailed(
                f"its output on a {tuple(x.shape)} probe is not one tensor of that shape"
            )
        formula = _match(x, y.double(), weight, bias, eps, reduced_dims, len(shape))
        if formula is None:
            raise ProbeFailed("its output matches neither LayerNorm nor RMSNorm")
        if eps is not None:
            return formula
        measured = _measure_eps(clone, x, formula, weight, bias)
    return Formula(formula.kind, formula.weight_offset, formula.reduced_dims, measured)


def affine_names(module: nn.Module) -> tuple[str | None, str | None]:
    """(gain, bias) parameter names: `weight` / `bias` when present, else the module's one
    parameter not named as a bias is its gain (ScaleNorm's `g`), a BIAS_NAMES one its bias."""
    own: dict[str, Tensor] = dict(module.named_parameters(recurse=False))
    own.update(
        {n: v for n in ("weight", "bias") if isinstance(v := getattr(module, n, None), Tensor)}
    )
    bias = next((n for n in BIAS_NAMES if n in own), None)
    if "weight" in own:
        return "weight", bias
    others = [n for n in own if n not in BIAS_NAMES]
    return (others[0] if len(others) == 1 else None), bias


def probe_shape(module: nn.Module, width: int | None = None) -> tuple[int, ...]:
    """The trailing shape the module expects: normalized_shape, else its gain's shape (a
    vector), else (`width`,)."""
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, int):
        return (shape,)
    if isinstance(shape, (tuple, list)) and shape and all(isinstance(s, int) for s in shape):
        return tuple(shape)
    weight = _param(module, affine_names(module)[0])
    if weight is not None and weight.ndim:
        return tuple(weight.shape)
    if width is None:
        raise ProbeFailed("its width is unknown: no normalized_shape, vector gain or probe input")
    return (width,)


def normalize(x: Tensor, kind: str, eps: float, dims: int) -> tuple[Tensor, Tensor]:
    """(centred x, its mean square) over the last `dims` axes: the formula before the affine."""
    axes = tuple(range(-dims, 0))
    z = x - x.mean(dim=axes, keepdim=True) if kind == "layernorm" else x
    return z, z.square().mean(dim=axes, keepdim=True) + eps


def _match(
    x: Tensor,
    y: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float | None,
    reduced_dims: int | None,
    ndim: int,
) -> Formula | None:
    """The candidate formula closest to y, if it is within MATCH_TOLERANCE."""
    offsets = (0.0, 1.0) if weight is not None else (0.0,)
    dims = (reduced_dims,) if reduced_dims else tuple(range(1, ndim + 1))
    best: tuple[float, Formula] | None = None
    for kind, offset, d in itertools.product(("layernorm", "rmsnorm"), offsets, dims):
        z, ms = normalize(x.double(), kind, 1e-5 if eps is None else eps, d)
        error = (_affine(z / ms.sqrt(), weight, bias, offset) - y).abs().max().item()
        if best is None or error < best[0]:
            best = error, Formula(kind, offset, d, None)
    scale = max(y.abs().max().item(), 1e-30)
    return best[1] if best is not None and best[0] / scale < MATCH_TOLERANCE else None


def _measure_eps(
    clone: nn.Module, x: Tensor, formula: Formula, weight: Tensor | None, bias: Tensor | None
) -> float | None:
    """eps from y = z / sqrt(ms + eps) * w + b on an input of variance EPS_PROBE_VARIANCE."""
    d = formula.reduced_dims
    small = x * EPS_PROBE_VARIANCE**0.5
    y = clone.forward(small).double()
    z, ms = normalize(small.double(), formula.kind, 0.0, d)
    scaled = _affine(z, weight, None, formula.weight_offset)  # what y - b is, times sqrt(ms + eps)
    shifted = y - (bias.double() if bias is not None else 0.0)
    axes = tuple(range(-d, 0))
    ratio = scaled.square().sum(dim=axes) / shifted.square().sum(dim=axes)  # = ms + eps
    eps = (ratio - ms.reshape(ratio.shape)).median().item()
    if not eps == eps:  # NaN: a zero weight leaves nothing to measure
        return None
    return float(f"{eps:.3g}") if eps >= EPS_RESOLUTION else 0.0


def _affine(
    normalized: Tensor, weight: Tensor | None, bias: Tensor | None, offset: float
) -> Tensor:
    out = normalized * (weight.double() + offset) if weight is not None else normalized
    return out + bias.double() if bias is not None else out


def _probe_input(shape: tuple[int, ...], weight: Tensor | None) -> Tensor:
    """A fixed (2, *shape) input with mean 1 and std 1, on the module's device."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, *shape), generator=generator) + 1.0
    return x.to(weight.device) if weight is not None else x


def _param(module: nn.Module, name: str | None) -> Tensor | None:
    value = getattr(module, name, None) if name is not None else None
    return value if isinstance(value, torch.Tensor) else None


def _first_line(exc: BaseException) -> str:
    line = next(iter(str(exc).strip().splitlines()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


SCALES = (0.25, 4.0)  # a normalizer's output is the same for c * x, c > 0


def scale_invariant(module: nn.Module, x: Tensor, y: Tensor) -> bool:
    """Whether `module` looks like a norm: its output y for x (..., tokens, d), as the probe
    pass saw it, is not constant over the tokens, and is unchanged on its largest token when
    x is scaled (y(c x) = y(x) for c in SCALES, to the precision of its dtype). Linear maps,
    activations and dropout scale with x; only normalizers do not.

    A module holding a weight matrix (a parameter of at least d^2 entries) is taken for a
    linear map without running it again; the others run on that one token (measured: the check
    adds 10 ms to the discovery of gpt2, whose 36 other one-tensor leaves it reruns). A
    module that cannot run on that token alone is not a per-token norm, and is not reported.
    """
    width = x.shape[-1]
    if any(p.numel() >= width * width for p in module.parameters(recurse=False)):
        return False
    tolerance = max(1e-3, 8 * torch.finfo(y.dtype).eps)
    flat = y.detach().double().reshape(-1, width)
    scale = flat.abs().amax().item()
    if not scale > 0 or len(flat) < 2 or (flat - flat[:1]).abs().amax().item() <= tolerance * scale:
        return False
    row = int(flat.square().sum(-1).argmax())  # the token whose output is largest
    one = (1,) * (x.ndim - 1) + (width,)
    token, want = x.reshape(-1, width)[row].reshape(one), flat[row].reshape(one)
    bound = tolerance * want.abs().amax().item()
    for c in SCALES:
        try:
            other = module.forward(token * c)
        except Exception:  # noqa: BLE001 - not a per-token module: not reported (see above)
            return False
        if not isinstance(other, Tensor) or other.shape != want.shape:
            return False
        if (other.double() - want).abs().amax().item() > bound:
            return False
    return True


def why_not_a_norm(module: nn.Module, width: int | None) -> str | None:
    """What the normalization probe saw when `module` is not a normalizer (None: it is one,
    or the probe cannot tell: its width unknown, its forward needing more than one tensor):
    run on 4 tokens of its width, its output must be one tensor of that shape, differ between
    tokens, and stay the same when the input is scaled by 4."""
    try:
        shape = probe_shape(module, width)
    except ProbeFailed:
        return None  # nothing to run it on: its formula note will say so
    first = next(iter((*module.parameters(), *module.buffers())), None)
    x = torch.randn((4, *shape), generator=torch.Generator().manual_seed(0)) + 1.0
    if first is not None and first.is_floating_point():
        x = x.to(first.device, first.dtype)
    seen = f"a {tuple(x.shape)} probe"
    with torch.no_grad():
        try:
            y, scaled = module.forward(x), module.forward(4 * x)
        except TypeError:  # its forward takes more than one tensor: the probe cannot tell
            return None
        except Exception as exc:  # noqa: BLE001 - it ran, and refused a float input
            return f"its forward on {seen} raised {_first_line(exc)}"
    if not isinstance(y, Tensor) or y.shape != x.shape or not isinstance(scaled, Tensor):
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        return f"its output on {seen} is {got}, not one tensor of that shape"
    flat, big = y.double().reshape(4, -1), scaled.double().reshape(4, -1)
    size = flat.abs().amax().item()
    if not size > 0 or (flat - flat[:1]).abs().amax().item() <= 1e-3 * size:
        return f"its output on {seen} is the same at every token"
    tolerance = max(1e-3, 8 * torch.finfo(y.dtype).eps)
    if (big - flat).abs().amax().item() > tolerance * size:
        ratio = big.norm().item() / flat.norm().item()
        return f"its output on {seen} changes when the input is scaled by 4 (it grows x{ratio:.3g})"
    return None
