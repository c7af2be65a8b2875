"""Port slots: every local Ray node gets its own block of ports.

Ray picks defaults (6379, 8265, 10001, random agent ports) that collide as soon as two nodes
share a host, so each node is pinned to a block of ``SLOT_SIZE`` ports identified by its first
port (the "base"). Slots in use are known from the state files of one state dir; a short-lived
host-wide lease covers the window between choosing a slot and Ray binding its ports, so
backends with different state dirs (other servers, parallel test runs) do not pick the same
free-looking block at the same time.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from raydeck.backends.base import BackendError
from raydeck.backends.local.locks import file_lock

__all__ = ["SLOT_SIZE", "NodePorts", "PortAllocator", "default_lease_file", "ephemeral_port_range"]

SLOT_SIZE = 100
_WORKER_PORTS_OFFSET = 10
_HEAD_WORKER_PORTS_OFFSET = 12
# On the head, the top of the block goes to Ray Client's per-client servers (see launcher.py).
_CLIENT_SERVER_PORTS_OFFSET = 70
_LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class NodePorts:
    """The fixed layout of one slot; head-only ports are unused on workers."""

    base: int
    head: bool = False

    @property
    def node_manager(self) -> int:
        return self.base

    @property
    def object_manager(self) -> int:
        return self.base + 1

    @property
    def dashboard_agent_listen(self) -> int:
        return self.base + 2

    @property
    def dashboard_agent_grpc(self) -> int:
        return self.base + 3

    @property
    def metrics_export(self) -> int:
        return self.base + 4

    @property
    def runtime_env_agent(self) -> int:
        return self.base + 5

    @property
    def gcs(self) -> int:
        return self.base + 6

    @property
    def dashboard(self) -> int:
        return self.base + 7

    @property
    def ray_client(self) -> int:
        return self.base + 8

    @property
    def serve(self) -> int:
        """Ray Serve's HTTP proxy (one per cluster, on the head)."""
        return self.base + 9

    @property
    def autoscaler_metrics(self) -> int:
        """Prometheus port of the head's autoscaler monitor (Ray's default: 44217 for all)."""
        return self.base + 10

    @property
    def dashboard_metrics(self) -> int:
        """Prometheus port of the head's dashboard (Ray's default: 44227 for all)."""
        return self.base + 11

    @property
    def min_worker(self) -> int:
        return self.base + (_HEAD_WORKER_PORTS_OFFSET if self.head else _WORKER_PORTS_OFFSET)

    @property
    def max_worker(self) -> int:
        if self.head:
            return self.base + _CLIENT_SERVER_PORTS_OFFSET - 1
        return self.base + SLOT_SIZE - 1

    @property
    def client_servers(self) -> range:
        """Ports for the servers Ray Client's proxy starts, one per connected client."""
        return range(self.base + _CLIENT_SERVER_PORTS_OFFSET, self.base + SLOT_SIZE)

    def all_ports(self) -> range:
        return range(self.base, self.base + SLOT_SIZE)


def default_lease_file() -> Path:
    # Per user, so two users on one host do not fight over file permissions.
    return Path("/tmp") / f"raydeck-port-leases-{os.getuid()}.json"


def _port_is_free(port: int) -> bool:
    # A wildcard bind fails if anything (any address, v4-mapped v6 included) holds the port.
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # family unsupported on this host
        try:
            # Like Ray's own servers, ignore TIME_WAIT leftovers; a listener still conflicts.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


def ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _block_is_free(base: int) -> bool:
    return all(_port_is_free(p) for p in NodePorts(base).all_ports())


class PortAllocator:
    """Chooses free slots inside ``port_range`` (inclusive bounds)."""

    def __init__(self, port_range: tuple[int, int], lease_file: Path | None = None) -> None:
        low, high = port_range
        if low < 1024 or high > 65535 or high - low + 1 < SLOT_SIZE:
            raise ValueError(f"port_range {port_range} must hold at least {SLOT_SIZE} ports")
        self._bases = range(low, high - SLOT_SIZE + 2, SLOT_SIZE)
        self._lease_file = lease_file or default_lease_file()

    def allocate(
        self, count: int, used: Iterable[int], prefer: Iterable[int] = (), owner: str = ""
    ) -> list[int]:
        """Reserve ``count`` slots not in ``used`` whose ports are all unbound.

        ``prefer`` bases are tried first (a restarted head keeps its endpoints); leases held by
        the same ``owner`` do not block it. The caller must hold the state-dir lock so that
        ``used`` cannot change underneath.
        """
        if count <= 0:
            return []
        taken = set(used)
        chosen: list[int] = []
        with file_lock(self._lease_file.with_suffix(".lock")):
            now = time.time()
            leases = {b: lease for b, lease in self._read_leases().items() if lease[0] > now}
            candidates = [b for b in prefer if b in self._bases] + self._by_preference()
            for base in candidates:
                if len(chosen) == count:
                    break
                leased = base in leases and (not owner or leases[base][1] != owner)
                if base in taken or leased or base in chosen:
                    continue
                if _block_is_free(base):
                    chosen.append(base)
            if len(chosen) < count:
                raise BackendError(
                    f"no free block of {SLOT_SIZE} ports left in "
                    f"{self._bases.start}-{self._bases.stop + SLOT_SIZE - 2}"
                )
            for base in chosen:
                leases[base] = (now + _LEASE_SECONDS, owner)
            self._write_leases(leases)
        return chosen

    def _by_preference(self) -> list[int]:
        # Blocks clear of the kernel's ephemeral range first: any outgoing connection may take
        # a port there, and a node that later finds one of its ports taken fails to start.
        low, high = ephemeral_port_range()
        return sorted(self._bases, key=lambda b: b + SLOT_SIZE > low and b <= high)

    def release(self, bases: Iterable[int]) -> None:
        """Drop leases once their nodes are up (their bound ports now keep others away)."""
        drop = set(bases)
        if not drop:
            return
        with file_lock(self._lease_file.with_suffix(".lock")):
            leases = self._read_leases()
            self._write_leases({b: lease for b, lease in leases.items() if b not in drop})

    def _read_leases(self) -> dict[int, tuple[float, str]]:
        try:
            raw = json.loads(self._lease_file.read_text())
            return {int(k): (float(v[0]), str(v[1])) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError, TypeError, IndexError, KeyError):
            return {}  # missing or corrupt: leases are only a short-lived hint

    def _write_leases(self, leases: dict[int, tuple[float, str]]) -> None:
        tmp = self._lease_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({str(k): list(v) for k, v in leases.items()}))
        os.replace(tmp, self._lease_file)
