"""Ray log files shipped by host agents (their Ray nodes' files are not on this machine).

Each chunk is whole lines of one file from a byte offset; the stored read position per
``<placement id>/<file>`` is the agent's resume point, so a restarted agent or server neither
skips nor repeats lines. A chunk at offset 0 for a file already read further means the file
started over (rotated or truncated) and is taken as such.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.models.hosts import AgentLogPositions, AgentLogs
from raydeck.core.models.operations import LogResourceKind
from raydeck.db.models import ClusterRow, EndpointRow, HostNodeRow, HostRow, LogCursorRow
from raydeck.server.services import logs as log_service

__all__ = ["store_agent_logs"]


def _key(cluster_id: str, node_id: str, file: str) -> str:
    return f"file:{cluster_id}:{node_id}:{file}"


def store_agent_logs(
    session: Session, host: HostRow, logs: AgentLogs, now: datetime
) -> tuple[AgentLogPositions, int]:
    """Store the chunks of this host's own nodes; returns the positions of all its nodes'
    files and how many lines were stored."""
    nodes = {
        r.id: r for r in session.scalars(select(HostNodeRow).where(HostNodeRow.host_id == host.id))
    }
    clusters = {
        c.id: c
        for c in session.scalars(
            select(ClusterRow).where(ClusterRow.id.in_({n.cluster_id for n in nodes.values()}))
        )
    }
    endpoints = {
        e.id: (e.name, e.project)
        for e in session.scalars(
            select(EndpointRow).where(EndpointRow.cluster_id.in_(list(clusters)))
        )
    }
    stored = 0
    for chunk in logs.chunks:
        node = nodes.get(chunk.node_id)
        cluster = clusters.get(node.cluster_id) if node is not None else None
        if node is None or cluster is None:
            continue  # not this host's node (or gone): never written under another's name
        key = _key(node.cluster_id, node.id, chunk.file)
        position = log_service.get_cursor(session, key)
        if chunk.offset not in (position, 0):
            continue  # out of order: the answer tells the agent where to resume
        log_service.set_cursor(session, key, chunk.offset + chunk.size)
        kind, resource_id, name, project = (
            LogResourceKind.CLUSTER,
            cluster.id,
            cluster.name,
            cluster.project,
        )
        for endpoint_id, (endpoint_name, endpoint_project) in endpoints.items():
            if chunk.file.startswith("serve/") and endpoint_id in chunk.file:
                kind, resource_id, name = LogResourceKind.ENDPOINT, endpoint_id, endpoint_name
                project = endpoint_project
        lines = chunk.text.splitlines()
        stored += log_service.store_lines(
            session,
            (
                log_service.LogLine(
                    project, kind, resource_id, name, f"{node.node}/{chunk.file}", now, line, sev
                )
                for line, sev in zip(lines, log_service.line_severities(lines), strict=True)
            ),
        )
    session.flush()
    positions: dict[str, int] = {}
    for node in nodes.values():
        prefix = _key(node.cluster_id, node.id, "")
        for row in session.scalars(
            select(LogCursorRow).where(LogCursorRow.source_key.startswith(prefix))
        ):
            positions[f"{node.id}/{row.source_key[len(prefix) :]}"] = row.position
    return AgentLogPositions(positions=positions), stored
