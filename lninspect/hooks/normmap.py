"""A bounded sample of a norm's input→output map, drawn on the device (docs/metrics.md).

For a token with input x over d hidden dimensions, centre c (the mean for LayerNorm, 0 for
RMSNorm) and divisor s (std or rms), the norm's output before its gain is ŷ = (x - c) / s.
The sample holds element pairs (x_j, ŷ_j) and where they sit, in two strata of fixed size:

- tails: each token's `per_token` elements of largest |x| (the ends of an S-shaped map);
- uniform: elements drawn uniformly over every (token, dimension) of every call.

Each stratum is a bottom-k reservoir: every candidate has a random key, exponential with
rate 1, and the stratum keeps the `size` smallest keys over all candidates seen, which is a
uniform sample without replacement of them. A tails candidate is one of a token's largest
|x|; for the uniform half every element of a call is a candidate, and the call offers only
the `size` elements of smallest key, those keys drawn exactly as the smallest order
statistics of one key per element (`MapSampler._uniform`), so that a call's cost is `size`
draws whatever its length. Merging is one topk over the kept and the new keys: fixed
shapes, so nothing is read back to the host and memory stays `size` pairs whatever the
length of the corpus. Pad tokens get an infinite key (never kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lninspect.hooks.reduce import hidden_flat
from lninspect.hooks.spikes import Layout
from lninspect.hooks.transfer import to_host
from lninspect.options import MapOptions

Tensor = torch.Tensor
FIELDS = ("x", "y", "sequence", "token", "head", "dim")  # what each kept pair records


@dataclass
class Stratum:
    """One reservoir on the device: keys (n,) float32 (inf: an empty slot) and its pairs."""

    keys: Tensor
    pairs: dict[str, Tensor]  # FIELDS -> (n,): x, y float32; the coordinates int64

    @staticmethod
    def empty(size: int, device: torch.device) -> Stratum:
        pairs = {
            k: torch.zeros(size, device=device, dtype=torch.float32 if k in "xy" else torch.int64)
            for k in FIELDS
        }
        return Stratum(torch.full((size,), torch.inf, device=device), pairs)

    def merge(self, keys: Tensor, pairs: dict[str, Tensor]) -> None:
        """Keep the smallest keys among the kept and the new candidates (a fixed-size topk)."""
        every = torch.cat([self.keys, keys])
        kept = every.topk(self.keys.numel(), largest=False, sorted=False).indices
        self.keys = every[kept]
        self.pairs = {k: torch.cat([self.pairs[k], pairs[k]])[kept] for k in FIELDS}


class MapSampler:
    """The sample of one norm over every call: `add` per call, `tensors` at the end."""

    def __init__(self, options: MapOptions, index: int) -> None:
        self.options = options
        self.index = index  # the norm's index: each norm its own stream of random numbers
        self.generator: torch.Generator | None = None
        self.tails: Stratum | None = None
        self.uniform: Stratum | None = None
        self.sequences = 0  # sequences of the calls so far: the next call's first sequence

    @torch.no_grad()
    def add(
        self,
        x: Tensor,
        centre: Tensor | None,
        scale: Tensor,
        reduced_dims: int = 1,
        real: Tensor | None = None,
    ) -> None:
        """Draw from one call: `centre` (None for RMSNorm) and `scale` per token, in the
        module's order, as lninspect.hooks.reduce computed them; `real` (sequences, tokens)
        False on padding (ignored unless it fits the call)."""
        flat = hidden_flat(x, reduced_dims)
        layout = Layout.of(flat, reduced_dims=1)
        X = layout.canonical(flat)  # (S, T, G, d), the module's dtype
        s = layout.canonical(scale.float())[..., None]  # (S, T, G, 1)
        c = None if centre is None else layout.canonical(centre.float())[..., None]
        pad = _pad(real, layout, X.device)  # (S, T, 1, 1) True on padding, or None
        self.start(X.device)
        k = min(self.options.per_token, X.shape[-1])
        dims = X.abs().topk(k, dim=-1, sorted=False).indices  # (S, T, G, k)
        self._draw(self.tails, X, c, s, dims, pad)
        rows, spots, keys = self._uniform(X)
        self._draw_rows(X, c, s, pad, rows, spots, keys)
        self.sequences += layout.sequences

    def start(self, device: torch.device) -> None:
        """Make the empty strata and the generator, at the first call (or before a merge)."""
        if self.tails is not None:
            return
        where = "cpu" if device.type == "meta" else device  # meta takes a CPU generator
        self.generator = torch.Generator(device=where)
        # each norm, and under torch.distributed each rank, its own stream of numbers
        stream = self.options.seed * 1_000_003 + self.index
        self.generator.manual_seed(stream + _rank() * 2**40)
        self.tails = Stratum.empty(self.options.tail_size, device)
        self.uniform = Stratum.empty(self.options.uniform_size, device)

    def _draw(
        self,
        stratum: Stratum | None,
        X: Tensor,
        c: Tensor | None,
        s: Tensor,
        dims: Tensor,
        pad: Tensor | None,
    ) -> None:
        """Candidates at `dims` (S, T, G, k) of every token into `stratum`."""
        assert stratum is not None
        values = X.gather(-1, dims).float()
        shape = dims.shape
        S, T, G, _ = shape
        coords = {
            "sequence": _axis(S, 0, shape, X.device) + self.sequences,
            "token": _axis(T, 1, shape, X.device),
            "head": _axis(G, 2, shape, X.device),
            "dim": dims,
        }
        keys = self._keys(shape, X.device)
        if pad is not None:
            keys = keys.masked_fill(pad.expand(shape), torch.inf)
        pairs = {"x": values, "y": _normalized(values, c, s), **coords}
        stratum.merge(keys.flatten(), {k: v.flatten() for k, v in pairs.items()})

    def _draw_rows(
        self,
        X: Tensor,
        c: Tensor | None,
        s: Tensor,
        pad: Tensor | None,
        rows: Tensor,
        dims: Tensor,
        keys: Tensor,
    ) -> None:
        """The uniform draws: (token, head) rows of the call and a dimension in each."""
        assert self.uniform is not None
        S, T, G, d = X.shape
        values = X.reshape(-1, d)[rows, dims].float()
        centre = None if c is None else c.reshape(-1)[rows]
        y = _normalized(values, centre, s.reshape(-1)[rows])
        if pad is not None:
            keys = keys.masked_fill(pad.expand(S, T, G, 1).reshape(-1)[rows], torch.inf)
        coords = {
            "sequence": rows // (T * G) + self.sequences,
            "token": rows // G % T,
            "head": rows % G,
            "dim": dims,
        }
        self.uniform.merge(keys, {"x": values, "y": y, **coords})

    def _keys(self, shape: tuple[int, ...] | torch.Size, device: torch.device) -> Tensor:
        """Exponential keys, -log(u) with u uniform in [0, 1)."""
        u = torch.rand(shape, device=device, generator=self.generator)
        return -torch.log1p(-u)

    def _uniform(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The elements of the call that hold its n smallest of M exponential keys, one per
        element: n distinct elements (without replacement, where M <= 4n; else with, whose
        repeats are rare) and the n smallest keys themselves by Rényi's representation,
        key_k = sum over i <= k of E_i / (M - i + 1): exact, never the M keys themselves."""
        M, d = X.numel(), X.shape[-1]
        n = min(self.options.uniform_size, M)
        device, generator = X.device, self.generator
        if M <= 4 * n:
            flat = torch.randperm(M, device=device, generator=generator)[:n]
        else:
            flat = torch.randint(0, M, (n,), device=device, generator=generator)
        left = M - torch.arange(n, device=device, dtype=torch.float32)
        keys = torch.cumsum(self._keys((n,), device) / left, 0)
        return flat // d, flat % d, keys

    def tensors(self) -> dict[str, Tensor]:
        """The kept pairs, the tails' stratum first, and their `keys` (inf: an empty slot),
        still on the device: the caller gathers every norm's in one transfer."""
        assert self.tails is not None and self.uniform is not None
        both = {k: torch.cat([self.tails.pairs[k], self.uniform.pairs[k]]) for k in FIELDS}
        return {**both, "keys": torch.cat([self.tails.keys, self.uniform.keys])}


def on_host(samplers: dict[str, MapSampler]) -> dict[str, tuple[dict[str, np.ndarray], int]]:
    """Each norm's kept pairs and keys as numpy arrays, with the size of its tails' stratum
    (lninspect.mapfit.norm_map reads them): one transfer per dtype for every norm."""
    drawn = {name: s for name, s in samplers.items() if s.tails is not None}
    records = {name: s.tensors() for name, s in drawn.items()}
    slots = [(name, key) for name, record in records.items() for key in record]
    host = to_host([records[name][key] for name, key in slots])
    arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in records}
    for (name, key), tensor in zip(slots, host, strict=True):
        arrays[name][key] = tensor.numpy()
    return {name: (arrays[name], drawn[name].options.tail_size) for name in records}


def merge_ranks(samplers: dict[str, MapSampler], device: torch.device, size: int) -> None:
    """Under torch.distributed: every rank's strata replaced by the merge of all ranks'. The
    `size` smallest keys of the union are those among each rank's `size` smallest, so the
    result is the sample one process would keep of every rank's candidates. A rank's
    sequence i is the corpus's sequence rank + i * size (lninspect.corpus.reader deals them
    round-robin). Four collectives of fixed shape whatever the number of norms."""
    import torch.distributed as dist

    rank, ordered = _rank(), list(samplers.values())
    for sampler in ordered:
        sampler.start(device)  # a rank that ran no batch offers empty slots
    for which in ("tails", "uniform"):
        strata: list[Stratum] = [getattr(sampler, which) for sampler in ordered]
        floats = torch.stack([torch.stack([s.keys, s.pairs["x"], s.pairs["y"]]) for s in strata])
        ints = torch.stack(
            [
                torch.stack([s.pairs["sequence"] * size + rank, *(s.pairs[k] for k in FIELDS[3:])])
                for s in strata
            ]
        )  # (norms, 4, n): sequence, token, head, dim
        every = []
        for local in (floats, ints):  # (norms, fields, n) -> (norms, fields, size * n)
            parts = [torch.empty_like(local) for _ in range(size)]
            dist.all_gather(parts, local)
            every.append(torch.cat(parts, dim=-1))
        for j, stratum in enumerate(strata):
            keys = every[0][j, 0]
            kept = keys.topk(stratum.keys.numel(), largest=False, sorted=False).indices
            stratum.keys = keys[kept]
            columns = [*every[0][j, 1:], *every[1][j]]  # x, y, sequence, token, head, dim
            stratum.pairs = {k: c[kept] for k, c in zip(FIELDS, columns, strict=True)}


def _rank() -> int:
    """This process's torch.distributed rank, 0 outside a process group."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _normalized(values: Tensor, c: Tensor | None, s: Tensor) -> Tensor:
    """ŷ = (x - c) / s at the sampled values, in float32."""
    return (values if c is None else values - c) / s


def _axis(n: int, axis: int, shape: torch.Size, device: torch.device) -> Tensor:
    """The index along `axis` broadcast to `shape` (int64)."""
    view = [1] * len(shape)
    view[axis] = n
    return torch.arange(n, device=device).view(view).expand(shape)


def _pad(real: Tensor | None, layout: Layout, device: torch.device) -> Tensor | None:
    if real is None or tuple(real.shape) != (layout.sequences, layout.tokens):
        return None
    return ~real.bool().view(layout.sequences, layout.tokens, 1, 1).to(device)
