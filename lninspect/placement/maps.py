"""The norm's map of a model being trained (`placement --train --map`; docs/metrics.md).

At the first and the last held-out evaluation, in eval mode, every norm's map ŷ = (x - c) / s
is sampled over the held-out windows (lninspect.hooks.normmap, the sample of `stats --map`)
and fitted (lninspect.mapfit): does it become an S with depth, and with training? A DyT
layout has no s (its "norm" is γ·tanh(αx) + β, an S by construction): nothing is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lninspect.hooks.capture import capture
from lninspect.norms.discovery import NormInfo
from lninspect.options import MapOptions
from lninspect.placement.layouts import FINAL, Layout
from lninspect.placement.refgpt import GPT
from lninspect.results.placement_training import MAP_FITS

SAMPLE = MapOptions(sample=True)  # the sample of `stats --map`: 4096 pairs per norm


def samples_map(layout: Layout) -> bool:
    """Whether the layout's norms divide by a per-token s (every layout but DyT)."""
    return layout.norm != "dyt"


@torch.no_grad()
def map_fits(
    model: GPT, norms: Sequence[NormInfo], windows: torch.Tensor, batch: int, layers: int
) -> dict[str, np.ndarray]:
    """Each norm key's fits over the held-out `windows`: (len(MAP_FITS), L; ln_f: 1)."""
    model.eval()
    with capture(model, norms, maps=SAMPLE) as cap:
        for chunk in windows.split(batch):
            model.loss(chunk)
    fitted = cap.maps()
    columns: dict[str, list[list[float]]] = {}
    for info in norms:  # model order: blocks.0.ln_1, ..., ln_f
        found = fitted[info.name]
        key = info.name.rsplit(".", 1)[-1]
        columns.setdefault(key, []).append([getattr(found, f) for f in MAP_FITS])
    fits = {key: np.asarray(rows, dtype=np.float64).T for key, rows in columns.items()}
    for key, values in fits.items():
        expected = 1 if key == FINAL else layers
        assert values.shape == (len(MAP_FITS), expected), (key, values.shape)
    return fits
