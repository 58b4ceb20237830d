"""From the text to the token ids a run uses: read only what is needed, encode, cut or window.

Without --stride the run keeps the first min(--max-tokens, context) tokens, and a file is read
only a little beyond them. With --stride S it covers the whole text in windows of that many
tokens, one starting every S tokens, each a sequence of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lninspect.errors import LninspectError
from lninspect.model.text import read_text
from lninspect.options import RunOptions

if TYPE_CHECKING:  # check_text runs before torch is imported
    from lninspect.model.loading import LoadedModel

MARGIN = 16  # tokens read beyond the limit, so that the cut never falls in a partly read word
CHARS_PER_TOKEN = 8  # a first guess, generous for most text; doubled while it falls short
PEEK_CHARS = 1 << 16  # at most this much of a file is checked before the model loads
# --stride reads the whole text: at most this many characters (about 2M tokens, whose
# per-token statistics take ~1.6 GB for a 25-norm model), so that a stream that never ends
# (`yes |`, /dev/urandom) cannot exhaust memory; longer texts are a corpus.
WHOLE_TEXT_CHARS = 8 << 20


def check_text(options: RunOptions) -> None:
    """Read the start of the text before the model loads, so that its errors come first."""
    budget = PEEK_CHARS
    if options.max_tokens is not None and not options.stride:
        budget = min(budget, _chars(options.max_tokens))
    read_text(options.text, options.file, options.encoding, max_chars=budget)


def token_windows(loaded: LoadedModel, options: RunOptions) -> list[list[int]]:
    """The token ids to run, as equal-length sequences (one, unless --stride is given)."""
    limit, why = _limit(loaded, options)
    ids, read = _read_ids(loaded, options, None if options.stride else limit)
    if not ids:
        raise LninspectError("the text encodes to no tokens")
    vocab = getattr(loaded.model.config, "vocab_size", None)
    if vocab is not None and max(ids) >= vocab:
        raise LninspectError(
            f"the tokenizer produced id {max(ids)}, outside the model's vocabulary of {vocab}"
        )
    if options.stride:
        return _windows(loaded, ids, limit, options.stride)
    if read is not None:  # the tokens after the limit may belong to a partly read word
        loaded.notes.append(
            f"'{options.file}' is longer than the run can use: read only its "
            f"first {read:,} characters, for the first {limit} tokens ({why})"
        )
        ids = ids[:limit]
    elif limit is not None and len(ids) > limit:
        loaded.notes.append(f"the text has {len(ids)} tokens: kept the first {limit} ({why})")
        ids = ids[:limit]
    return [ids]


def _limit(loaded: LoadedModel, options: RunOptions) -> tuple[int | None, str]:
    """The most tokens a sequence may have, and why: --max-tokens or the model's context."""
    limits = [
        (v, why)
        for v, why in (
            (options.max_tokens, "max_tokens="),
            (loaded.context, "the model's context"),
        )
        if v
    ]
    return min(limits, default=(None, ""))


def _read_ids(
    loaded: LoadedModel, options: RunOptions, limit: int | None
) -> tuple[list[int], int | None]:
    """Encode the text, reading a file only until it gives `limit` tokens and a margin.

    Returns the ids and, when a file was read only in part, how many characters were read.
    """
    if limit is None:  # --stride: the whole text, up to WHOLE_TEXT_CHARS (a stream may not end)
        text = read_text(options.text, options.file, options.encoding, WHOLE_TEXT_CHARS)
        if not text.complete:
            raise LninspectError(
                f"the text is longer than {WHOLE_TEXT_CHARS:,} characters, the most stride= "
                "covers in one run; give a corpus instead (files= with seq_len= or lines=True: "
                "aggregates streamed in fixed memory, docs/corpus.md)"
            )
        return _encode(loaded, options, text.text), None
    chars = _chars(limit)
    while True:
        text = read_text(options.text, options.file, options.encoding, max_chars=chars)
        ids = _encode(loaded, options, text.text)
        if text.complete or len(ids) >= limit + MARGIN:
            return ids, None if text.complete else len(text.text)
        chars *= 2


# What a run keeps per token of every window: its id and its text (~80 bytes), and per norm
# ~12 float32 statistics of x and y on the device and again on the host.
TOKEN_BYTES = 80
NORM_TOKEN_BYTES = 2 * 12 * 4


def _check_windows(loaded: LoadedModel, count: int, window: int, stride: int) -> None:
    """Refuse, before the window lists are built, a --stride run whose windows x what each
    keeps exceeds the free memory (stride 1 over a long text: ~10^5 windows)."""
    from lninspect.model.checks import dimension
    from lninspect.model.memory import Need, check_fits

    norms = 2 * (dimension(loaded.model.config, "layers") or 1) + 1
    need = Need(parameters=0, activations=count * window * (TOKEN_BYTES + norms * NORM_TOKEN_BYTES))
    what = f"stride={stride}: {count:,} windows of {window} tokens"
    check_fits(need, loaded.device, what, "a larger stride=, a shorter text or fewer max_tokens=")


def _encode(loaded: LoadedModel, options: RunOptions, text: str) -> list[int]:
    return loaded.tokenizer.encode_text(text, options.bos, options.chat_template)


def _chars(tokens: int) -> int:
    """Characters to read first for `tokens` tokens."""
    return CHARS_PER_TOKEN * (tokens + MARGIN)


def _windows(
    loaded: LoadedModel, ids: list[int], window: int | None, stride: int
) -> list[list[int]]:
    """Windows of `window` tokens, one every `stride`; the last one ends with the text."""
    if window is None:
        raise LninspectError(
            "stride= needs max_tokens=: the model's config states no context "
            "length to use as the window"
        )
    if stride > window:
        raise LninspectError(
            f"stride={stride} is longer than the window of {window} tokens "
            "(max_tokens= or the model's context): tokens would be skipped"
        )
    if len(ids) <= window:
        return [ids]
    count = len(range(0, len(ids) - window + 1, stride)) + 1  # at most one more at the end
    _check_windows(loaded, count, window, stride)
    starts = list(range(0, len(ids) - window + 1, stride))
    if starts[-1] + window < len(ids):
        starts.append(len(ids) - window)
    loaded.notes.append(
        f"the text has {len(ids)} tokens: {len(starts)} windows of {window} "
        f"tokens, one every {stride} (stride=; the last ends with the text)"
    )
    return [ids[s : s + window] for s in starts]
