"""``raydeck`` command line (typer + rich)."""
