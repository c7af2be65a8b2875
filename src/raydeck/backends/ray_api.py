"""Async client for one cluster's Ray dashboard REST API (Jobs API + autoscaler view).

Everything Ray or httpx raises is translated into ``raydeck.core.errors``: Ray answers
errors as plain-text tracebacks (often nested: head -> job agent), so messages are cut
down to their last meaningful line before they reach a user.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RaydeckError,
    UnavailableError,
)

__all__ = [
    "ClusterLoad",
    "NodeLoad",
    "PendingPlacementGroup",
    "RayDashboardClient",
    "RayJobInfo",
    "clean_ray_message",
]

_MAX_MESSAGE = 500
_EXC_PREFIX = re.compile(r"^(?:[A-Za-z_][\w.]*?(?:Error|Exception|Exit|Warning)):\s*")
_IDLE_SECONDS = re.compile(r"NodeIdleSeconds: Min=(-?\d+) Mean=(-?\d+) Max=(-?\d+)")


@dataclass(frozen=True)
class RayJobInfo:
    submission_id: str
    status: str  # PENDING / RUNNING / SUCCEEDED / FAILED / STOPPED, as Ray reports it
    message: str | None  # Ray's raw text; may hold a traceback for FAILED jobs
    start_time: datetime | None
    end_time: datetime | None
    entrypoint: str
    metadata: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] | None = None
    job_id: str | None = None  # Ray's driver job id, set once the driver started
    error_type: str | None = None


@dataclass(frozen=True)
class NodeLoad:
    node_id: str
    address: str  # node manager "ip:port": identifies the raylet a backend started
    is_head: bool
    total: dict[str, float]
    available: dict[str, float]
    busy: bool  # some resource other than node:* is in use (available < total)
    idle_seconds: float | None  # only when Ray's report pins it to this node, see cluster_load


@dataclass(frozen=True)
class PendingPlacementGroup:
    bundles: tuple[dict[str, float], ...]
    strategy: str  # PACK / SPREAD / STRICT_PACK / STRICT_SPREAD


@dataclass(frozen=True)
class ClusterLoad:
    demands: tuple[dict[str, float], ...]  # every pending bundle: tasks, actors, PGs, requests
    placement_groups: tuple[PendingPlacementGroup, ...]  # the PG part again, with strategy
    nodes: tuple[NodeLoad, ...]
    reported_at: datetime | None  # when Ray's autoscaler monitor wrote the report


def clean_ray_message(text: str, *, default: str = "Ray request failed") -> str:
    """The last meaningful line of a Ray error text, without the exception class name."""
    for raw in reversed(text.strip().splitlines()):
        line = raw.strip()
        if (
            not line
            or raw[:1].isspace()  # traceback frame / source line
            or line.startswith(("Traceback", "During handling", "The above exception", "^"))
            or not any(ch.isalnum() for ch in line)  # a lone "." closing a nested traceback
        ):
            continue
        # Ray nests the agent's traceback inside "RuntimeError: Request failed ...: <tb>";
        # the innermost exception is the last line, so stripping one prefix is enough.
        line = _EXC_PREFIX.sub("", line).strip()
        if line:
            return line[:_MAX_MESSAGE]
    return default


def _ms_to_datetime(value: Any) -> datetime | None:
    if value in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def _job_from_json(data: Mapping[str, Any]) -> RayJobInfo:
    return RayJobInfo(
        submission_id=str(data["submission_id"]),
        status=str(data.get("status", "")),
        message=data.get("message"),
        start_time=_ms_to_datetime(data.get("start_time")),
        end_time=_ms_to_datetime(data.get("end_time")),
        entrypoint=str(data.get("entrypoint", "")),
        metadata=dict(data.get("metadata") or {}),
        runtime_env=data.get("runtime_env"),
        job_id=data.get("job_id"),
        error_type=data.get("error_type"),
    )


def _ray_camel_case(name: str) -> str:
    # The dashboard camelCases every dict key it returns through rest_response(),
    # resource names included ("object_store_memory" -> "objectStoreMemory").
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _bundles(pairs: Any) -> list[dict[str, float]]:
    """Expand Ray's ``[[bundle, count], ...]`` into one entry per bundle."""
    out: list[dict[str, float]] = []
    for bundle, count in pairs or []:
        clean = {str(k): float(v) for k, v in bundle.items()}
        out.extend(dict(clean) for _ in range(int(count)))
    return out


_T = TypeVar("_T")


def _shaped(what: str, parse: Callable[..., _T], *payloads: Any) -> _T:
    """Parse a Ray answer; a shape Ray did not promise becomes UnavailableError, not KeyError."""
    try:
        return parse(*payloads)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UnavailableError(
            f"unexpected Ray dashboard answer for {what}: {type(exc).__name__}: {exc}"
        ) from exc


class RayDashboardClient:
    """Talks to ``dashboard_url`` (``http://host:port``) with Ray's own bearer token."""

    def __init__(
        self,
        dashboard_url: str,
        ray_token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        headers = {"Authorization": f"Bearer {ray_token}"} if ray_token else {}
        self._http = httpx.AsyncClient(
            base_url=self.dashboard_url, headers=headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing -------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json_body, params=params)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = str(exc) or type(exc).__name__
            raise UnavailableError(
                f"cannot reach Ray dashboard at {self.dashboard_url}: {detail}"
            ) from exc
        if response.is_success:
            return response
        raise self._error(response)

    def _error(self, response: httpx.Response) -> RaydeckError:
        status, text = response.status_code, response.text
        try:  # rest_response() endpoints answer {"result": false, "msg": ...}
            payload = json.loads(text)
            if isinstance(payload, dict) and isinstance(payload.get("msg"), str):
                text = payload["msg"]
        except ValueError:
            pass
        message = clean_ray_message(text, default=f"Ray dashboard answered HTTP {status}")
        if status == 404:
            return NotFoundError(message)
        if status in (401, 403):
            # Our per-cluster Ray token was refused: a control-plane fault, not the caller's.
            return FailedPreconditionError(f"Ray dashboard rejected the cluster token: {message}")
        # The head relays job-agent failures as 500 with the agent's status inside the text.
        if "already exists" in message:
            return AlreadyExistsError(message)
        if "non-terminal state" in message:
            return FailedPreconditionError(message)
        if status == 400 or "status code 400" in text:
            return InvalidArgumentError(message)
        if 400 <= status < 500:
            return FailedPreconditionError(message)
        return UnavailableError(message)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise UnavailableError(f"Ray dashboard sent non-JSON for {path}") from exc

    @staticmethod
    def _job_path(submission_id: str, suffix: str = "") -> str:
        return f"/api/jobs/{quote(submission_id, safe='')}{suffix}"

    # -- Serve REST API (declarative: one config holds every application) ---------------

    async def serve_apply(self, config: dict[str, Any]) -> None:
        """PUT the whole Serve config; applications left out of it are removed."""
        await self._request("PUT", "/api/serve/applications/", json_body=config)

    async def serve_status(self) -> dict[str, Any]:
        """Serve's view: {"applications": {name: {"status", "message", ...}}, ...}."""
        data = await self._json("GET", "/api/serve/applications/")
        return _shaped("serve status", dict, data)

    # -- Jobs API -------------------------------------------------------------------------

    async def version(self) -> dict[str, Any]:
        data = await self._json("GET", "/api/version")
        return _shaped("version", dict, data)

    async def submit_job(
        self,
        entrypoint: str,
        *,
        submission_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
    ) -> str:
        body = {
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": metadata,
            "entrypoint_num_cpus": entrypoint_num_cpus,
            "entrypoint_num_gpus": entrypoint_num_gpus,
            "entrypoint_memory": entrypoint_memory,
            "entrypoint_resources": entrypoint_resources,
        }
        data = await self._json(
            "POST", "/api/jobs/", json_body={k: v for k, v in body.items() if v is not None}
        )
        return _shaped("job submission", lambda d: str(d["submission_id"]), data)

    async def get_job(self, submission_id: str) -> RayJobInfo:
        data = await self._json("GET", self._job_path(submission_id))
        return _shaped("job", _job_from_json, data)

    async def list_jobs(self) -> list[RayJobInfo]:
        """Submitted jobs only: plain drivers (e.g. Ray Client sessions) have no submission id."""
        data = await self._json("GET", "/api/jobs/")
        return _shaped(
            "job list", lambda d: [_job_from_json(i) for i in d if i.get("submission_id")], data
        )

    async def stop_job(self, submission_id: str) -> bool:
        data = await self._json("POST", self._job_path(submission_id, "/stop"))
        return _shaped("job stop", lambda d: bool(d.get("stopped")), data)

    async def delete_job(self, submission_id: str) -> bool:
        """Raises FailedPreconditionError while the job is not in a terminal state."""
        data = await self._json("DELETE", self._job_path(submission_id))
        return _shaped("job delete", lambda d: bool(d.get("deleted")), data)

    async def get_job_logs(self, submission_id: str) -> str:
        data = await self._json("GET", self._job_path(submission_id, "/logs"))
        return _shaped("job logs", lambda d: str(d.get("logs", "")), data)

    # -- autoscaler view ------------------------------------------------------------------

    async def cluster_load(self) -> ClusterLoad:
        """Pending demand and per-node usage, as Ray's own autoscaler sees them.

        Source: ``GET /api/cluster_status``, the report the autoscaler monitor (started by
        every ``ray start --head``, v1 by default in 2.60) writes to the GCS every ~5 s:
        ``loadMetricsReport.resourceDemand``/``pgDemand``/``requestDemand`` (bundle dicts
        inside ``[bundle, count]`` pairs keep Ray's resource names) and ``usageByNode``
        (node id -> resource -> [used, total], names camelCased by the dashboard). Exact
        resource names and totals come from ``/api/v0/nodes`` (state API, not camelCased),
        the node manager port from ``/nodes?view=summary``. Ray reports idle time only as
        one cluster-wide "NodeIdleSeconds" (tracked per IP, so raylets sharing an IP
        collapse): ``idle_seconds`` is filled for a one-node cluster, otherwise callers
        track ``busy`` over time.
        """
        status, summary, states = await asyncio.gather(
            self._json("GET", "/api/cluster_status"),
            self._json("GET", "/nodes", params={"view": "summary"}),
            self._json("GET", "/api/v0/nodes", params={"limit": "10000", "detail": "1"}),
        )
        return _shaped("cluster status", _parse_cluster_load, status, summary, states)


def _parse_cluster_load(status: Any, summary: Any, states: Any) -> ClusterLoad:
    """Join the three dashboard answers; see ``RayDashboardClient.cluster_load``."""
    data = status.get("data") or {}
    report = data.get("clusterStatus") or {}
    metrics = report.get("loadMetricsReport") or {}
    usage_by_node: dict[str, dict[str, list[float]]] = metrics.get("usageByNode") or {}
    if not usage_by_node:
        raise UnavailableError(
            "Ray's autoscaler monitor has not reported cluster load yet "
            "(it reports every few seconds after start; autoscaler v2 does not report here)"
        )

    placement_groups = []
    for pg, count in metrics.get("pgDemand") or []:
        group = PendingPlacementGroup(
            bundles=tuple(_bundles(pg.get("bundles"))), strategy=str(pg.get("strategy", ""))
        )
        placement_groups.extend([group] * int(count))
    demands = _bundles(metrics.get("resourceDemand"))
    demands += [b for group in placement_groups for b in group.bundles]
    demands += _bundles(metrics.get("requestDemand"))

    ports = {
        node["raylet"]["nodeId"]: (
            f"{node['raylet']['nodeManagerAddress']}:{node['raylet']['nodeManagerPort']}"
        )
        for node in (summary.get("data") or {}).get("summary") or []
        if (node.get("raylet") or {}).get("state") == "ALIVE"
    }
    alive = [
        n
        for n in ((states.get("data") or {}).get("result") or {}).get("result") or []
        if n.get("state") == "ALIVE" and n.get("node_id") in ports
    ]
    idle_match = _IDLE_SECONDS.search(data.get("autoscalingStatus") or "")
    single_idle = float(idle_match.group(3)) if idle_match and len(alive) == 1 else None

    nodes: list[NodeLoad] = []
    for node in alive:
        used = usage_by_node.get(node["node_id"])
        if used is None:  # joined after the monitor's last report
            continue
        total = {str(k): float(v) for k, v in (node.get("resources_total") or {}).items()}
        available = {
            name: amount - float((used.get(_ray_camel_case(name)) or [0.0])[0])
            for name, amount in total.items()
        }
        busy = any(
            available[name] < amount - 1e-9
            for name, amount in total.items()
            if not name.startswith("node:")
        )
        nodes.append(
            NodeLoad(
                node_id=node["node_id"],
                address=ports[node["node_id"]],
                is_head=bool(node.get("is_head_node")),
                total=total,
                available=available,
                busy=busy,
                idle_seconds=None if single_idle is None else (0.0 if busy else single_idle),
            )
        )
    reported = report.get("time")
    return ClusterLoad(
        demands=tuple(demands),
        placement_groups=tuple(placement_groups),
        nodes=tuple(nodes),
        reported_at=datetime.fromtimestamp(float(reported), tz=UTC) if reported else None,
    )
