"""/api/v1/hosts (registry, join tokens, joining) and /api/v1/agent/sync (host agents)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from raydeck.core.models import Page
from raydeck.core.models.hosts import (
    AgentDesired,
    AgentLogPositions,
    AgentLogs,
    AgentSync,
    Host,
    HostJoined,
    HostRegistration,
    JoinToken,
    JoinTokenCreate,
    JoinTokenCreated,
)
from raydeck.db.models import HostRow, JoinTokenRow
from raydeck.server.auth import PERMISSION_KEY, Principal, bearer_secret, require
from raydeck.server.routers.common import DbSession, State
from raydeck.server.services import host_logs
from raydeck.server.services import hosts as service

router = APIRouter(tags=["hosts"])


@router.post("/api/v1/hosts/tokens", status_code=201)
def create_join_token(
    body: JoinTokenCreate,
    session: DbSession,
    _: Annotated[Principal, Depends(require("hosts.create"))],
) -> JoinTokenCreated:
    """A join token (shown once): it can only register hosts, and it expires."""
    return service.create_join_token(session, body)


@router.get("/api/v1/hosts/tokens")
def list_join_tokens(
    session: DbSession, _: Annotated[Principal, Depends(require("hosts.list"))]
) -> Page[JoinToken]:
    return service.list_join_tokens(session)


@router.delete("/api/v1/hosts/tokens/{token_id}")
def revoke_join_token(
    token_id: str, session: DbSession, _: Annotated[Principal, Depends(require("hosts.delete"))]
) -> JoinToken:
    return service.revoke_join_token(session, token_id)


def _join_token(request: Request, session: DbSession) -> JoinTokenRow:
    """Joining takes a join token (never an API token): the token is the permission."""
    setattr(request.state, PERMISSION_KEY, "hosts.join")
    return service.check_join_token(session, bearer_secret(request))


def _agent_host(request: Request, session: DbSession) -> HostRow:
    """Agent routes take a host's own credential (never an API token)."""
    # A heartbeat changes no desired state: "connect" keeps it out of the audit log.
    setattr(request.state, PERMISSION_KEY, "hosts_agent.connect")
    return service.authenticate_agent(session, bearer_secret(request))


@router.post("/api/v1/hosts/join", status_code=201)
def join_host(
    body: HostRegistration,
    session: DbSession,
    token: Annotated[JoinTokenRow, Depends(_join_token)],
) -> HostJoined:
    """Called by `raydeck node join` with a join token (not an API token) as bearer."""
    return service.join_host(session, token, body)


@router.get("/api/v1/hosts")
def list_hosts(
    session: DbSession, state: State, _: Annotated[Principal, Depends(require("hosts.list"))]
) -> Page[Host]:
    return service.list_hosts(session, timeout=state.settings.host_heartbeat_timeout)


@router.get("/api/v1/hosts/{name}")
def get_host(
    name: str,
    session: DbSession,
    state: State,
    _: Annotated[Principal, Depends(require("hosts.get"))],
) -> Host:
    return service.get_host(session, name, timeout=state.settings.host_heartbeat_timeout)


@router.post("/api/v1/hosts/{name}/drain")
def drain_host(
    name: str,
    session: DbSession,
    state: State,
    _: Annotated[Principal, Depends(require("hosts.update"))],
    undo: Annotated[bool, Query(description="take new nodes again")] = False,
) -> Host:
    return service.drain_host(
        session, name, timeout=state.settings.host_heartbeat_timeout, undo=undo
    )


@router.delete("/api/v1/hosts/{name}")
def delete_host(
    name: str,
    session: DbSession,
    state: State,
    _: Annotated[Principal, Depends(require("hosts.delete"))],
    force: Annotated[bool, Query(description="even while it runs nodes")] = False,
) -> Host:
    return service.delete_host(
        session, name, timeout=state.settings.host_heartbeat_timeout, force=force
    )


@router.post("/api/v1/agent/sync")
def agent_sync(
    host: Annotated[HostRow, Depends(_agent_host)],
    body: AgentSync,
    session: DbSession,
    state: State,
) -> AgentDesired:
    """A host agent's heartbeat (agent credential only): what it runs in, what it should
    run out."""
    return service.agent_sync(session, host, body, state.settings)


@router.post("/api/v1/agent/logs")
def agent_logs(
    host: Annotated[HostRow, Depends(_agent_host)],
    body: AgentLogs,
    session: DbSession,
    state: State,
) -> AgentLogPositions:
    """Ray log lines of the host's own nodes (agent credential only); answers where to resume."""
    positions, stored = host_logs.store_agent_logs(session, host, body, state.clock())
    state.metrics.log_records.labels("cluster").inc(stored)
    return positions
