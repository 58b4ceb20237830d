"""The checks of a run that need no torch, made before torch is imported (seconds, not the
minute a model takes to load): the text, the model's source (a typo, a missing folder, an
uncached hub id without network), the device map and its memory limits."""

from __future__ import annotations

from lninspect.options import RunOptions


def check_early(run: RunOptions, text: bool = True) -> None:
    """Refuse `run` before any loading where these checks can tell (LninspectError)."""
    from lninspect.model.device_map import check_device_map
    from lninspect.model.sources import locate
    from lninspect.model.tokens import check_text

    if text:
        check_text(run)
    check_device_map(run.device_map, run.max_memory)
    if run.model is not None:
        locate(run.model, run.revision)
