"""``python -m raydeck``: the CLI."""

from raydeck.cli.main import main

main()
