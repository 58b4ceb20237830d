"""The `lninspect` command line (imports neither torch nor transformers)."""

from lninspect.cli.app import app, main

__all__ = ["app", "main"]
