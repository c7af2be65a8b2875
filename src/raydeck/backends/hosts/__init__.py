"""The ``hosts`` backend: Ray nodes on machines that joined with ``raydeck node join``."""

from raydeck.backends.hosts.backend import HostsClusterBackend

__all__ = ["HostsClusterBackend"]
