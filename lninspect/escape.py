"""Text shown to people with its control characters made visible (no torch, no numpy).

A text, a file name or a token may hold an ESC sequence that would drive the terminal, a
carriage return that hides what came before it, or a bidirectional override that reorders
what follows. Everywhere lninspect echoes such a string (notes, errors, tables, figure
titles) it goes through `visible`, which writes those characters as Python escapes.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidirectional embeddings, overrides and isolates.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in "\n\t\r":
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, keep_newlines: bool = False) -> str:
    """`text` with control characters escaped (`\\x1b`, `\\u202e`); newlines kept if asked."""
    if keep_newlines:
        return "\n".join(_HIDDEN.sub(_escape, line) for line in text.split("\n"))
    return _HIDDEN.sub(_escape, text)
