"""The compare job: the same text through several models or checkpoints, one at a time,
then matched norm by norm (lninspect.comparison). Each model runs `run_grads` with spikes
(one forward and backward) and is released before the next one loads."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import replace

from lninspect.comparison import compare_results, split_revision
from lninspect.errors import LninspectError
from lninspect.jobs import run_grads
from lninspect.options import RunOptions, SpikeOptions
from lninspect.results import GradsResult
from lninspect.results.compare import CompareResult


def run_models(
    specs: Sequence[str],
    options: RunOptions,
    spikes: SpikeOptions,
    progress: Callable[[str], None] | None = None,
) -> list[GradsResult]:
    """The grads result (with spikes) of every model spec on the same text."""
    if len(specs) < 2:
        raise LninspectError("compare needs at least two models")
    results = []
    for spec in specs:
        name, revision = split_revision(spec)
        if progress is not None:
            progress(spec)
        run = replace(options, model=name, revision=revision or options.revision)
        results.append(run_grads(run, "ce", None, spikes=spikes))
        gc.collect()  # the model of this run is no longer referenced: free it now
    return results


def run_compare(
    specs: Sequence[str],
    options: RunOptions,
    spikes: SpikeOptions,
    progress: Callable[[str], None] | None = None,
) -> CompareResult:
    """Several models on one text, matched norm by norm, with their largest differences."""
    return compare_results(run_models(specs, options, spikes, progress), specs)
