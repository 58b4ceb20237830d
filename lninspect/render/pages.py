"""HTML from the Jinja templates in lninspect/render/templates (no torch).

Every page and notebook view is rendered by one environment with autoescape on, so a value
is escaped unless it is marked safe, and with StrictUndefined, so a name the template uses
and the code does not pass is an error, not an empty string. Data for a script is inlined
with the `script_json` filter (lninspect.render.inline), which cannot close its <script>.
"""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from lninspect.render.inline import script_json


@cache
def environment() -> Environment:
    """The one Jinja environment of lninspect's HTML."""
    env = Environment(
        loader=PackageLoader("lninspect.render", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,  # a page ends with its newline, as written
    )
    env.filters["script_json"] = lambda data: Markup(script_json(data))
    return env


def render_page(template: str, **context: Any) -> str:
    """The template `template` rendered with `context`."""
    return environment().get_template(template).render(**context)


def macros(template: str) -> Any:
    """The macros of `template`, to call from Python (they return escaped HTML)."""
    return environment().get_template(template).module


def png_data(data: bytes) -> str:
    """PNG bytes as base64 text, for a data: URI."""
    return base64.b64encode(data).decode("ascii")


def png_uri(path: Path) -> str:
    """A PNG file as a data: URI, for a page that carries its images."""
    return f"data:image/png;base64,{png_data(path.read_bytes())}"
