"""The local backend: Ray clusters as ``ray start`` processes on this host."""

from raydeck.backends.local.backend import LocalClusterBackend
from raydeck.backends.local.processes import find_cluster_processes

__all__ = ["LocalClusterBackend", "find_cluster_processes"]
