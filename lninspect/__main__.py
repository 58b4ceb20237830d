"""`python -m lninspect` runs the CLI."""

from lninspect.cli import main

main()
