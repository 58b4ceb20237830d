"""A GGUF model through transformers' reader: its optional packages, its header checked
before transformers reads it, its own progress bar silenced."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

from lninspect.errors import LninspectError
from lninspect.model.checks import check_gguf_fields
from lninspect.model.gguf_header import read_header
from lninspect.model.sources import GGUF_SUFFIX, Source


def check_gguf(source: Source) -> None:
    """A GGUF file's header walked within bounds and its numbers checked before transformers
    reads it (its reader builds objects per metadata element: lninspect.model.gguf_header)."""
    _check_reader()
    path = os.path.join(source.path, source.gguf_file or "")
    name = source.spec if source.spec.lower().endswith(GGUF_SUFFIX) else path
    check_gguf_fields(read_header(path, name).values, name)


@contextmanager
def quiet_gguf(gguf: bool) -> Iterator[None]:
    """transformers' GGUF loader draws a tqdm bar of its own ("Converting and de-quantizing
    GGUF tensors..."), which disable_progress_bar() does not reach: it is switched off for
    the load and restored after (stderr keeps one-line notes, piped or in a notebook)."""
    if not gguf:
        yield
        return
    import transformers.modeling_gguf_pytorch_utils as gguf_loader

    bar = gguf_loader.tqdm
    gguf_loader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_loader.tqdm = bar


def _check_reader() -> None:
    """transformers reads GGUF files through the `gguf` package and loads them only with
    `accelerate`: optional dependencies, the `gguf` extra."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise LninspectError(
            f"a .gguf model needs the `{'` and `'.join(missing)}` package"
            f"{'s' if len(missing) > 1 else ''}, which {'are' if len(missing) > 1 else 'is'} "
            "not installed: pip install 'lninspect[gguf]'"
        )
