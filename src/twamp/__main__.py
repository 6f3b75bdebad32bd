"""`python -m twamp`: the `twamp` command."""

from .cli.main import main

main()
