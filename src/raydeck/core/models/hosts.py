"""Hosts: machines that run Ray nodes for the ``hosts`` backend, and their agents' protocol.

A host joins with a join token (``rdj_…``: single-purpose, expiring, stored hashed), gets its
own agent credential (``rda_…``) and then polls the control plane: it reports what it runs
(``AgentSync``) and is told what it should run (``AgentDesired``). The agent opens no port.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from raydeck.core.models.common import LenientModel, Name, StrictModel

__all__ = [
    "AgentDesired",
    "AgentLogChunk",
    "AgentLogPositions",
    "AgentLogs",
    "AgentNodeReport",
    "AgentSync",
    "Host",
    "HostJoined",
    "HostNodeState",
    "HostRegistration",
    "HostState",
    "JoinToken",
    "JoinTokenCreate",
    "JoinTokenCreated",
    "NodeAssignment",
]

Label = dict[
    Annotated[str, Field(min_length=1, max_length=63)], Annotated[str, Field(max_length=63)]
]
Resources = dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[float, Field(ge=0)]]


class HostState(StrEnum):
    READY = "READY"  # agent heartbeating, takes new nodes
    DRAINING = "DRAINING"  # takes nothing new; its workers are moved away
    LOST = "LOST"  # no heartbeat within the timeout (computed, never stored)


class HostNodeState(StrEnum):
    PENDING = "PENDING"  # placed, the agent has not reported it yet
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"  # `ray start` failed, or the node's daemons died


class JoinTokenCreate(StrictModel):
    expires_in_days: Annotated[float, Field(gt=0, le=365)] = 1
    description: Annotated[str, Field(max_length=200)] = ""


class JoinToken(LenientModel):
    id: str
    prefix: str
    description: str = ""
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    hosts_joined: int = 0


class JoinTokenCreated(JoinToken):
    secret: str  # shown once


class HostRegistration(StrictModel):
    """What ``raydeck node join`` sends: the host's name, reachable IP and capacity."""

    name: Name
    address: str
    num_cpus: Annotated[float, Field(ge=0, le=4096)]
    num_gpus: Annotated[float, Field(ge=0, le=1024)] = 0
    memory: Annotated[int, Field(ge=0)] = 0  # bytes
    resources: Resources = Field(default_factory=dict, max_length=32)
    labels: Label = Field(default_factory=dict, max_length=32)
    agent_version: Annotated[str, Field(max_length=64)] = ""

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"address must be an IP address, not {value!r}") from None
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"address {value} cannot be reached by other hosts")
        return str(ip)


class Host(LenientModel):
    id: str
    name: str
    address: str
    state: HostState
    num_cpus: float
    num_gpus: float = 0
    memory: int = 0
    resources: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    free_cpus: float = 0
    free_gpus: float = 0
    free_memory: int = 0
    free_resources: dict[str, float] = Field(default_factory=dict)
    nodes: list[str] = Field(default_factory=list)  # "<cluster>/<node>" placed here
    agent_version: str = ""
    created_at: datetime
    last_seen_at: datetime | None = None


class HostJoined(LenientModel):
    host: Host
    credential: str  # the agent's own bearer credential, shown once


class NodeAssignment(LenientModel):
    """One Ray node the server wants this host to run."""

    id: str  # stable per placement; also the process marker on the host
    cluster_id: str
    cluster_name: str
    node: str  # "head" or "<pool>-<n>"
    pool: str
    port_base: int
    head_address: str  # IP of the head's host
    head_port_base: int  # the head's port slot (its GCS port follows from it)
    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None
    resources: dict[str, float] = Field(default_factory=dict)
    ray_auth_token: str
    env: dict[str, str] = Field(default_factory=dict)


class AgentDesired(LenientModel):
    host: str
    nodes: list[NodeAssignment] = Field(default_factory=list)
    poll_seconds: float = 1.0


class AgentNodeReport(StrictModel):
    id: str = Field(max_length=64)
    state: HostNodeState
    node_ip: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, max_length=2000)


class AgentSync(StrictModel):
    nodes: list[AgentNodeReport] = Field(default_factory=list, max_length=1000)


class AgentLogChunk(StrictModel):
    """Whole lines of one Ray log file of one node, starting at byte ``offset``."""

    node_id: str = Field(max_length=64)
    file: str = Field(min_length=1, max_length=200, pattern=r"^(serve/)?[A-Za-z0-9_.\-]+$")
    offset: int = Field(ge=0)
    size: int = Field(ge=0, le=262_144)  # bytes of the file the text was decoded from
    text: str = Field(max_length=262_144)


class AgentLogs(StrictModel):
    chunks: list[AgentLogChunk] = Field(default_factory=list, max_length=64)


class AgentLogPositions(LenientModel):
    """How far the control plane has stored each ``<node_id>/<file>``: ship from there."""

    positions: dict[str, int] = Field(default_factory=dict)
