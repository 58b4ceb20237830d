"""The `lninspect` command line (imports neither torch nor transformers).

app.py holds the Typer app, the root options and the error handling; analysis.py and
training.py add their commands to it when imported here.
"""

from lninspect.cli import analysis, training  # noqa: F401 - they register the commands
from lninspect.cli.app import app, main

__all__ = ["app", "main"]
