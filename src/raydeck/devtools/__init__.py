"""Helpers for running a real Raydeck server as a subprocess (demo, tests, benchmarks)."""

from raydeck.devtools.netns import NetnsHosts, netns_unavailable_reason
from raydeck.devtools.server_process import ServerProcess, free_port

__all__ = ["NetnsHosts", "ServerProcess", "free_port", "netns_unavailable_reason"]
