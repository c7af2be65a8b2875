"""Hosts: join tokens, registration, the registry, and agents' syncs.

Three kinds of secret, each accepted in one place only: a join token (``rdj_``) can only
register a host; a host's agent credential (``rda_``) can only sync that host; API tokens
(``rdk_``) manage hosts and are never accepted by the agent routes.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from raydeck.backends.hosts.store import effective_state, free_capacity
from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    UnauthenticatedError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import ClusterState, Page
from raydeck.core.models.hosts import (
    AgentDesired,
    AgentSync,
    Host,
    HostJoined,
    HostNodeState,
    HostRegistration,
    HostState,
    JoinToken,
    JoinTokenCreate,
    JoinTokenCreated,
    NodeAssignment,
)
from raydeck.core.settings import Settings
from raydeck.db.models import ClusterRow, HostNodeRow, HostRow, JoinTokenRow, utcnow
from raydeck.server.services.clusters import ray_token
from raydeck.server.services.tokens import hash_secret

__all__ = [
    "AGENT_PREFIX",
    "JOIN_PREFIX",
    "agent_sync",
    "authenticate_agent",
    "check_join_token",
    "create_join_token",
    "delete_host",
    "drain_host",
    "get_host",
    "join_host",
    "list_hosts",
    "list_join_tokens",
    "revoke_join_token",
]

JOIN_PREFIX = "rdj_"
AGENT_PREFIX = "rda_"


# --- join tokens -----------------------------------------------------------------------


def _join_token(row: JoinTokenRow) -> JoinToken:
    return JoinToken(
        id=row.id,
        prefix=row.prefix,
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        hosts_joined=row.hosts_joined,
    )


def create_join_token(session: Session, request: JoinTokenCreate) -> JoinTokenCreated:
    secret = JOIN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = JoinTokenRow(
        id=new_id("jt"),
        prefix=secret[:12],
        secret_hash=hash_secret(secret),
        description=request.description,
        created_at=now,
        expires_at=now + timedelta(days=request.expires_in_days),
    )
    session.add(row)
    session.flush()
    return JoinTokenCreated(**_join_token(row).model_dump(), secret=secret)


def list_join_tokens(session: Session) -> Page[JoinToken]:
    rows = session.scalars(select(JoinTokenRow).order_by(JoinTokenRow.id))
    return Page[JoinToken](items=[_join_token(r) for r in rows])


def revoke_join_token(session: Session, token_id: str) -> JoinToken:
    row = session.get(JoinTokenRow, token_id)
    if row is None:
        raise NotFoundError(f"join token {token_id!r} not found", field="token")
    row.revoked_at = row.revoked_at or utcnow()
    return _join_token(row)


# --- registration ----------------------------------------------------------------------


def check_join_token(session: Session, join_secret: str) -> JoinTokenRow:
    """The join token behind ``join_secret``; 401 when unknown, revoked or expired."""
    token = session.scalar(
        select(JoinTokenRow).where(JoinTokenRow.secret_hash == hash_secret(join_secret))
    )
    if token is None or token.revoked_at is not None:
        raise UnauthenticatedError("invalid or revoked join token")
    if token.expires_at <= datetime.now(UTC):
        raise UnauthenticatedError("join token expired; create a new one")
    return token


def join_host(session: Session, token: JoinTokenRow, request: HostRegistration) -> HostJoined:
    """Register a host (``token`` checked); returns its agent credential (shown once)."""
    now = datetime.now(UTC)
    if session.scalar(select(HostRow.id).where(HostRow.name == request.name)) is not None:
        raise AlreadyExistsError(
            f"host {request.name!r} is already registered; delete it first or join under "
            "another --name",
            field="name",
        )
    credential = AGENT_PREFIX + secrets.token_urlsafe(32)
    row = HostRow(
        id=new_id("host"),
        name=request.name,
        address=request.address,
        state=HostState.READY.value,
        num_cpus=request.num_cpus,
        num_gpus=request.num_gpus,
        memory=request.memory,
        resources=dict(request.resources),
        labels=dict(request.labels),
        credential_hash=hash_secret(credential),
        agent_version=request.agent_version,
        join_token_id=token.id,
        observed={},
        created_at=now,
        last_seen_at=now,
    )
    token.hosts_joined += 1
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExistsError(
            f"host {request.name!r} is already registered", field="name"
        ) from exc
    return HostJoined(host=_host(session, row, now, 3600.0), credential=credential)


def authenticate_agent(session: Session, credential: str) -> HostRow:
    host = session.scalar(select(HostRow).where(HostRow.credential_hash == hash_secret(credential)))
    if host is None:
        raise UnauthenticatedError("unknown agent credential (was the host deleted?)")
    return host


# --- registry --------------------------------------------------------------------------


def _host(session: Session, row: HostRow, now: datetime, timeout: float) -> Host:
    placed = list(session.scalars(select(HostNodeRow).where(HostNodeRow.host_id == row.id)))
    free = free_capacity(row, placed)
    names = _cluster_names(session, {p.cluster_id for p in placed})
    return Host(
        id=row.id,
        name=row.name,
        address=row.address,
        state=effective_state(row, now, timeout),
        num_cpus=row.num_cpus,
        num_gpus=row.num_gpus,
        memory=row.memory,
        resources=dict(row.resources),
        labels=dict(row.labels),
        free_cpus=free.cpus,
        free_gpus=free.gpus,
        free_memory=max(0, free.memory),
        free_resources=free.resources,
        nodes=sorted(f"{names.get(p.cluster_id, p.cluster_id)}/{p.node}" for p in placed),
        agent_version=row.agent_version,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
    )


def _cluster_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    query = select(ClusterRow.id, ClusterRow.name).where(ClusterRow.id.in_(ids))
    return {cluster_id: name for cluster_id, name in session.execute(query)}


def _host_row(session: Session, name: str) -> HostRow:
    row = session.scalar(select(HostRow).where((HostRow.name == name) | (HostRow.id == name)))
    if row is None:
        raise NotFoundError(f"host {name!r} not found", field="host")
    return row


def list_hosts(session: Session, *, timeout: float) -> Page[Host]:
    now = datetime.now(UTC)
    rows = session.scalars(select(HostRow).order_by(HostRow.name))
    return Page[Host](items=[_host(session, r, now, timeout) for r in rows])


def get_host(session: Session, name: str, *, timeout: float) -> Host:
    return _host(session, _host_row(session, name), datetime.now(UTC), timeout)


def drain_host(session: Session, name: str, *, timeout: float, undo: bool = False) -> Host:
    """Nothing new goes to a draining host, and its clusters move their workers away."""
    row = _host_row(session, name)
    row.state = (HostState.READY if undo else HostState.DRAINING).value
    if not undo:
        _touch_clusters(session, row.id, "host {host} is draining: moving its workers")
    return _host(session, row, datetime.now(UTC), timeout)


def delete_host(session: Session, name: str, *, timeout: float, force: bool = False) -> Host:
    """Unregister a host; refused while it holds nodes unless ``force`` (then its clusters
    lose those nodes: workers are replaced elsewhere, a head puts its cluster in ERROR)."""
    row = _host_row(session, name)
    placed = list(session.scalars(select(HostNodeRow).where(HostNodeRow.host_id == row.id)))
    if placed and not force:
        names = _cluster_names(session, {p.cluster_id for p in placed})
        held = sorted(f"{names.get(p.cluster_id, p.cluster_id)}/{p.node}" for p in placed)
        raise FailedPreconditionError(
            f"host {row.name!r} still runs {len(held)} node(s): {', '.join(held[:10])}; "
            "drain it first (`raydeck hosts drain`) or delete with --force",
            field="host",
        )
    result = _host(session, row, datetime.now(UTC), timeout)
    if placed:
        _touch_clusters(session, row.id, "host {host} was deleted")
        for node in placed:
            session.delete(node)
    session.delete(row)
    return result


def _touch_clusters(session: Session, host_id: str, reason: str) -> None:
    """Make running clusters with nodes on ``host_id`` reconcile now."""
    host = session.get(HostRow, host_id)
    ids = set(session.scalars(select(HostNodeRow.cluster_id).where(HostNodeRow.host_id == host_id)))
    for cluster in session.scalars(select(ClusterRow).where(ClusterRow.id.in_(ids))):
        if cluster.state == ClusterState.RUNNING.value:
            cluster.state = ClusterState.UPDATING.value
            cluster.state_reason = reason.format(host=host.name if host else host_id)
            cluster.generation += 1


# --- agents ----------------------------------------------------------------------------


def agent_sync(
    session: Session, host: HostRow, report: AgentSync, settings: Settings
) -> AgentDesired:
    """Record what the agent runs; answer what it should run (with each cluster's Ray token,
    which only the hosts running that cluster's nodes receive)."""
    host.last_seen_at = datetime.now(UTC)
    host.observed = {n.id: n.state.value for n in report.nodes}
    reports = {n.id: n for n in report.nodes}
    rows = list(session.scalars(select(HostNodeRow).where(HostNodeRow.host_id == host.id)))
    for row in rows:
        seen = reports.get(row.id)
        if seen is None or seen.state == HostNodeState.PENDING:
            continue
        if (row.state, row.node_ip, row.error) != (seen.state.value, seen.node_ip, seen.error):
            row.state, row.node_ip, row.error = seen.state.value, seen.node_ip, seen.error
    cluster_ids = {r.cluster_id for r in rows}
    clusters = {
        c.id: c for c in session.scalars(select(ClusterRow).where(ClusterRow.id.in_(cluster_ids)))
    }
    head_hosts = {
        cluster_id: (address, base)
        for cluster_id, address, base in session.execute(
            select(HostNodeRow.cluster_id, HostRow.address, HostNodeRow.port_base)
            .join(HostRow, HostRow.id == HostNodeRow.host_id)
            .where(HostNodeRow.cluster_id.in_(cluster_ids), HostNodeRow.node == "head")
        )
    }
    nodes = []
    for row in rows:
        cluster = clusters.get(row.cluster_id)
        head = head_hosts.get(row.cluster_id)
        if cluster is None or head is None:
            continue  # mid-deletion or mid-replan: stop/skip until the next sync
        launch = row.launch
        nodes.append(
            NodeAssignment(
                id=row.id,
                cluster_id=row.cluster_id,
                cluster_name=cluster.name,
                node=row.node,
                pool=row.pool,
                port_base=row.port_base,
                head_address=head[0],
                head_port_base=head[1],
                num_cpus=launch.get("num_cpus", 1),
                num_gpus=launch.get("num_gpus", 0),
                memory=launch.get("memory"),
                resources=launch.get("resources") or {},
                ray_auth_token=ray_token(settings, cluster),
                env=launch.get("env") or {},
            )
        )
    return AgentDesired(host=host.name, nodes=nodes, poll_seconds=settings.host_poll_interval)
