"""lninspect: normalization statistics inside GPT-style models.

The Python API, for notebooks and scripts:

    import lninspect
    loaded = lninspect.load_model("tiny")   # or a hub id, a directory, random:ARCH
    model, tokenizer = loaded.model, loaded.tokenizer
    with lninspect.capture(model) as cap:
        model(input_ids)
    result = cap.result()          # lninspect.results.StatsResult
    result.to_dataframe()          # long format (pip install 'lninspect[pandas]')

    with lninspect.watch(model, every=50, log_dir="runs/a") as w:   # a training loop
        ...; w.step(loss=loss)     # once per optimizer step (docs/training.md)

`import lninspect` stays light: torch is imported on first use of the API.
"""

from __future__ import annotations

from typing import Any

from lninspect.display import load_views_with as _load_views_with

__version__ = "0.1.0"
__all__ = [
    "capture",
    "load_model",
    "watch",
    "WatchCallback",
    "find_norms",
    "SpikeOptions",
    "StatsResult",
    "LninspectError",
]

_API = {
    "capture": "lninspect.hooks.capture",
    "load_model": "lninspect.model.loading",
    "watch": "lninspect.monitor.watcher",
    "WatchCallback": "lninspect.monitor.trainer",
    "find_norms": "lninspect.norms.discovery",
    "SpikeOptions": "lninspect.options",
    "StatsResult": "lninspect.results",
    "LninspectError": "lninspect.errors",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'lninspect' has no attribute {name!r}")


def _notebook_views() -> None:
    """Import the renderer, which registers the results' notebook views (lninspect.display)."""
    import lninspect.render.notebook  # noqa: F401


_load_views_with(_notebook_views)  # on the first view a notebook asks for, not now
