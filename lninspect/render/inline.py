"""Data inlined in an HTML page: JSON inside a <script> element (no torch)."""

from __future__ import annotations

import json
from typing import Any

# Inside <script> the HTML parser ends the element at "</script", and "<!--" followed by
# "<script" holds it open past its end tag (the page is then blank). A \u escape of every
# <, > and & leaves the JSON the same to JSON.parse and gives the parser nothing to see.
_UNSAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def script_json(data: Any) -> str:
    """`data` as JSON that is safe as the content of a <script> element of any type."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False).translate(_UNSAFE)
