"""`python -m ramcli` runs the CLI."""

from .cli import main

main()
