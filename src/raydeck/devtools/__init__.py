"""Helpers for running a real Raydeck server as a subprocess (demo, tests, benchmarks)."""

from raydeck.devtools.server_process import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port"]
