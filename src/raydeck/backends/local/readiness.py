"""Waiting until a freshly started cluster can take work."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection
from typing import Any

import httpx

from raydeck.backends.base import BackendError

__all__ = ["registered_node_ports", "wait_for_nodes", "wait_for_port"]

_POLL_SECONDS = 0.2


def wait_for_port(host: str, port: int, timeout: float, gave_up: Callable[[], object]) -> bool:
    """True once ``host:port`` accepts TCP connections; False on timeout or once ``gave_up()``
    returns something other than None (e.g. ``Popen.poll`` of the process meant to listen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and gave_up() is None:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(_POLL_SECONDS)
    return False


def registered_node_ports(dashboard_url: str, token: str) -> set[int]:
    """Node-manager ports of the nodes Ray's dashboard lists as ALIVE.

    ``/nodes?view=summary`` is the one dashboard route of Ray 2.60 that reports each node's
    ``nodeManagerPort`` (the state API's ``/api/v0/nodes`` does not); ``nocache=1`` skips its
    2 s response cache.
    """
    response = httpx.get(
        f"{dashboard_url}/nodes",
        params={"view": "summary", "nocache": "1"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5.0,
        trust_env=False,  # a proxy from the environment must not see loopback traffic
    )
    response.raise_for_status()
    summary: list[dict[str, Any]] = response.json()["data"]["summary"]
    ports: set[int] = set()
    for entry in summary:
        raylet = entry.get("raylet") or {}
        if raylet.get("state") == "ALIVE" and "nodeManagerPort" in raylet:
            ports.add(int(raylet["nodeManagerPort"]))
    return ports


def wait_for_nodes(
    dashboard_url: str, token: str, node_manager_ports: Collection[int], timeout: float
) -> None:
    """Block until every given node is ALIVE in Ray's view (so its resources are schedulable)."""
    wanted = set(node_manager_ports)
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            missing = wanted - registered_node_ports(dashboard_url, token)
            last_error = ""
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            missing, last_error = wanted, f"{type(exc).__name__}: {exc}"
        if not missing:
            return
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise BackendError(
                f"Ray dashboard at {dashboard_url} did not list nodes with node-manager ports "
                f"{sorted(missing)} as ALIVE within {timeout:.0f}s{detail}"
            )
        time.sleep(_POLL_SECONDS)
