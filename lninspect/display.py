"""How a result shows itself in a notebook, without the results importing the renderer.

A result's `_repr_html_` asks `html_view` here; lninspect.render.notebook registers the views
(`register_html`) when it is imported, so the layers run one way: render/ imports results/,
never the reverse. The package's __init__ names, with `load_views_with`, what imports the
renderer on the first view asked for, so that a notebook that only imported lninspect shows
HTML, and `import lninspect` imports neither matplotlib nor the renderer. Imports nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_VIEWS: dict[type, Callable[[Any], str]] = {}
_LOADERS: list[Callable[[], object]] = []


def register_html(cls: type, view: Callable[[Any], str]) -> None:
    """Show instances of `cls` (and of its subclasses) in a notebook as `view(obj)`."""
    _VIEWS[cls] = view


def load_views_with(loader: Callable[[], object]) -> None:
    """Call `loader` (which registers views) before the first view is looked up."""
    _LOADERS.append(loader)


def html_view(obj: object) -> str | None:
    """`obj`'s notebook HTML, or None where no view is registered for its type (a notebook
    then shows its text repr)."""
    while _LOADERS:
        _LOADERS.pop(0)()
    for cls in type(obj).__mro__:
        if cls in _VIEWS:
            return _VIEWS[cls](obj)
    return None
