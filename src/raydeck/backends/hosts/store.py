"""Reading the host registry: which hosts are alive, and what is still free on each."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.backends.hosts.placement import Capacity, HostView
from raydeck.core.models.hosts import HostState
from raydeck.db.models import HostNodeRow, HostRow

__all__ = [
    "effective_state",
    "free_capacity",
    "host_views",
    "is_live",
    "node_demand",
    "total_capacity",
]

# Agents cannot have reached a server that was not running: heartbeats count from this
# process's start at the earliest, so a restarted server gives every host a full timeout to
# sync again instead of declaring them all lost at once.
_PROCESS_STARTED = datetime.now(UTC)


def is_live(host: HostRow, now: datetime, timeout: float) -> bool:
    seen = max(host.last_seen_at or host.created_at, _PROCESS_STARTED)
    return now - seen <= timedelta(seconds=timeout)


def effective_state(host: HostRow, now: datetime, timeout: float) -> HostState:
    return HostState(host.state) if is_live(host, now, timeout) else HostState.LOST


def node_demand(row: HostNodeRow) -> Capacity:
    launch = row.launch
    return Capacity(
        float(launch.get("num_cpus", 0)),
        float(launch.get("num_gpus", 0)),
        int(launch.get("memory") or 0),
        {str(k): float(v) for k, v in (launch.get("resources") or {}).items()},
    )


def total_capacity(host: HostRow) -> Capacity:
    return Capacity(
        host.num_cpus,
        host.num_gpus,
        host.memory,
        {str(k): float(v) for k, v in host.resources.items()},
    )


def free_capacity(host: HostRow, placed: Iterable[HostNodeRow]) -> Capacity:
    free = total_capacity(host)
    for row in placed:
        if row.host_id == host.id:
            free.take(node_demand(row))
    return free


def host_views(session: Session, now: datetime, timeout: float) -> list[HostView]:
    """Every live READY host with its free capacity (after every node placed on it)."""
    hosts = [
        h
        for h in session.scalars(select(HostRow).order_by(HostRow.name))
        if h.state == HostState.READY and is_live(h, now, timeout)
    ]
    if not hosts:
        return []
    placed = list(
        session.scalars(select(HostNodeRow).where(HostNodeRow.host_id.in_([h.id for h in hosts])))
    )
    return [
        HostView(h.id, h.name, dict(h.labels), free_capacity(h, placed), check_memory=h.memory > 0)
        for h in hosts
    ]
