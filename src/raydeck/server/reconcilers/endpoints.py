"""Turns each cluster's endpoints into one Ray Serve config and reports per-endpoint state.

Serve's REST API is declarative per cluster (a PUT replaces every application), so the
work is keyed by cluster: any endpoint change on it re-applies the cluster's whole config.

Models are loaded only there, by their Serve replicas (the control plane never loads one).
A deployed model whose replicas cannot load it is rolled back: it leaves the endpoint's spec,
the rest is re-applied and keeps serving, and the endpoint ends FAILED with the model's load
error in ``state_reason`` and in its logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update

from raydeck.core.errors import RaydeckError
from raydeck.core.models import ClusterState, EndpointState
from raydeck.core.models.operations import LogResourceKind, LogSeverity
from raydeck.db.models import ClusterRow, EndpointRow
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services.clusters import ray_token
from raydeck.server.services.endpoints import without_failed_models
from raydeck.server.services.jobs import ClusterTarget
from raydeck.server.services.logs import LogLine, store_lines
from raydeck.server.state import ServerState

__all__ = ["SERVE_IMPORT_PATH", "EndpointReconciler", "route_prefix"]

log = logging.getLogger(__name__)

SERVE_IMPORT_PATH = "raydeck.runtime.serving.app:build_app"
DEPLOY_TIMEOUT_SECONDS = 600.0
_PENDING = {EndpointState.CREATING.value, EndpointState.UPDATING.value, "DELETING"}
_SETTLED = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}
_BROKEN = {"DEPLOY_FAILED", "UNHEALTHY"}
_NOISE = ("Traceback", "During handling", "The above exception", "^", "~", "File ")


def route_prefix(endpoint_id: str) -> str:
    return f"/v1/endpoints/{endpoint_id}"


def load_error(message: str) -> str:
    """One line from a Serve deployment's failure message (its replica's traceback): the
    exception the model's constructor raised, without module paths of our own errors."""
    lines = [
        line.strip()
        for line in message.splitlines()
        if line.strip() and not line[:1].isspace() and not line.strip().startswith(_NOISE)
    ]
    last = lines[-1] if lines else "its replicas did not start"
    last = re.sub(r"^raydeck\.core\.errors\.\w+: ", "", last)
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+(?:Error|Exception): )", "", last)[:1000]


def failed_models(
    endpoints: tuple[_EndpointPlan, ...], statuses: dict[str, dict[str, Any]]
) -> dict[str, dict[str, str]]:
    """Endpoint id → {deployed model id: load error} for the models being deployed whose
    Serve deployment failed (replica constructor: the model did not load)."""
    found: dict[str, dict[str, str]] = {}
    for endpoint in endpoints:
        status = statuses.get(endpoint.id, {})
        if endpoint.state not in _PENDING or status.get("status") not in _BROKEN:
            continue
        deployments = status.get("deployments") or {}
        for model in endpoint.spec["deployed_models"]:
            deployment = deployments.get(f"model-{model['id']}") or {}
            if deployment.get("status") in _BROKEN:
                errors = found.setdefault(endpoint.id, {})
                errors[model["id"]] = load_error(str(deployment.get("message") or ""))
    return found


@dataclass(frozen=True)
class _EndpointPlan:
    id: str
    generation: int
    state: str
    spec: dict[str, Any]
    project: str = "default"


@dataclass(frozen=True)
class _ClusterPlan:
    target: ClusterTarget | None
    cluster_state: str | None
    serve_port: int | None
    endpoints: tuple[_EndpointPlan, ...]
    serve_host: str | None = None  # the head's address (another machine on `hosts`)


class EndpointReconciler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("endpoints", state.settings.reconcile_interval, self.tick)
        state.wake_callbacks.append(self.loop.wake)

    async def tick(self) -> None:
        clusters = await asyncio.to_thread(self._clusters_with_pending_work)
        for cluster_id in clusters:
            self.loop.spawn(cluster_id, partial(self._sync, cluster_id))

    def _clusters_with_pending_work(self) -> set[str]:
        with self.state.db.session() as session:
            rows = session.execute(
                select(EndpointRow.cluster_id).where(EndpointRow.state.in_(_PENDING))
            )
            return {cluster_id for (cluster_id,) in rows}

    def _plan(self, cluster_id: str) -> _ClusterPlan:
        with self.state.db.session() as session:
            cluster = session.get(ClusterRow, cluster_id)
            endpoints = tuple(
                _EndpointPlan(r.id, r.generation, r.state, dict(r.spec), r.project)
                for r in session.scalars(
                    select(EndpointRow).where(EndpointRow.cluster_id == cluster_id)
                )
            )
            if cluster is None or not cluster.dashboard_url:
                return _ClusterPlan(None, cluster.state if cluster else None, None, endpoints)
            target = ClusterTarget(
                cluster.id,
                cluster.name,
                cluster.dashboard_url,
                ray_token(self.state.settings, cluster),
            )
            port = cluster.spec.get("serve_port")
            host = urlsplit(cluster.dashboard_url).hostname
            return _ClusterPlan(target, cluster.state, port, endpoints, host)

    def _serve_config(self, plan: _ClusterPlan) -> dict[str, Any]:
        authorize = f"{self.state.settings.advertised_url}/api/v1/endpoints/{{id}}/authorize"
        token = plan.target.ray_auth_token if plan.target is not None else ""
        stats_token = (
            {"stats_token_sha256": hashlib.sha256(token.encode()).hexdigest()} if token else {}
        )
        applications = [
            {
                "name": endpoint.id,
                "route_prefix": route_prefix(endpoint.id),
                "import_path": SERVE_IMPORT_PATH,
                "args": {
                    "endpoint_id": endpoint.id,
                    "authorize_url": authorize.format(id=endpoint.id),
                    "traffic_split": endpoint.spec["traffic_split"],
                    "deployed_models": endpoint.spec["deployed_models"],
                    # Left out for the default project, so older apps' configs stay the same.
                    **({"project": endpoint.project} if endpoint.project != "default" else {}),
                    # The stats collector sends the cluster's Ray token; Serve sees its hash.
                    **stats_token,
                },
            }
            for endpoint in plan.endpoints
            if endpoint.state != EndpointState.DELETING.value and endpoint.spec["deployed_models"]
        ]
        return {
            "proxy_location": "HeadOnly",  # one HTTP proxy per cluster: one port to allocate
            "http_options": {
                "host": plan.serve_host or self.state.settings.ray_bind_host,
                "port": plan.serve_port,
            },
            "applications": applications,
        }

    async def _sync(self, cluster_id: str) -> None:
        plan = await asyncio.to_thread(self._plan, cluster_id)
        if plan.cluster_state == ClusterState.PROVISIONING.value:
            return  # deploy once the cluster runs
        if plan.target is None or plan.cluster_state not in ("RUNNING", "UPDATING"):
            reason = f"cluster is {plan.cluster_state or 'deleted'}"
            await asyncio.to_thread(self._record, plan, {}, reason)
            return
        if plan.serve_port is None:
            await asyncio.to_thread(self._record, plan, {}, "the cluster has no Serve port")
            return
        config = self._serve_config(plan)
        try:
            async with plan.target.client() as ray:
                await ray.serve_apply(config)
                statuses = await self._wait_settled(
                    ray, {a["name"] for a in config["applications"]}
                )
                failures = failed_models(plan.endpoints, statuses)
                if failures:  # roll those models back; the rest keeps serving
                    plan = await asyncio.to_thread(self._roll_back, cluster_id, plan, failures)
                    config = self._serve_config(plan)
                    await ray.serve_apply(config)
                    statuses = await self._wait_settled(
                        ray, {a["name"] for a in config["applications"]}
                    )
        except RaydeckError as exc:
            await asyncio.to_thread(self._record, plan, {}, f"Serve deploy failed: {exc}")
            return
        await asyncio.to_thread(self._record, plan, statuses, None)

    @staticmethod
    async def _wait_settled(ray: Any, names: set[str]) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
        while True:
            apps = (await ray.serve_status()).get("applications", {})
            statuses = {name: apps.get(name, {}) for name in names}
            if all(s.get("status") in _SETTLED for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.25)

    def _roll_back(
        self, cluster_id: str, plan: _ClusterPlan, failures: dict[str, dict[str, str]]
    ) -> _ClusterPlan:
        with self.state.db.session() as session:
            for endpoint in plan.endpoints:
                errors = failures.get(endpoint.id)
                if not errors:
                    continue
                spec, reason = without_failed_models(endpoint.spec, errors)
                changed = session.execute(
                    update(EndpointRow)
                    .where(_unchanged(endpoint))
                    .values(spec=spec, generation=endpoint.generation + 1, state_reason=reason)
                )
                if not getattr(changed, "rowcount", 0):
                    continue  # changed meanwhile: the next pass deploys what it now says
                log.warning("endpoint %s: %s", endpoint.id, reason)
                name = session.scalar(select(EndpointRow.name).where(EndpointRow.id == endpoint.id))
                now = self.state.clock()
                store_lines(
                    session,
                    [
                        LogLine(
                            endpoint.project,
                            LogResourceKind.ENDPOINT,
                            endpoint.id,
                            name or endpoint.id,
                            "deploy",
                            now,
                            f"deployed model {model_id} failed to load on the cluster and was "
                            f"undeployed: {error}",
                            LogSeverity.ERROR,
                        )
                        for model_id, error in errors.items()
                    ],
                )
        return self._plan(cluster_id)

    def _record(
        self, plan: _ClusterPlan, statuses: dict[str, dict[str, Any]], failure: str | None
    ) -> None:
        """Each endpoint's outcome, written only if its generation is still the one deployed
        (a guarded UPDATE: an API change committed meanwhile is never overwritten)."""
        port = plan.serve_port
        host = plan.serve_host or self.state.settings.ray_bind_host
        if ":" in host:
            host = f"[{host}]"
        url_base = f"http://{host}:{port}"
        with self.state.db.session() as session:
            for endpoint in plan.endpoints:
                row = session.get(EndpointRow, endpoint.id)
                if row is None or row.generation != endpoint.generation:
                    continue  # changed while we deployed: the next pass handles it
                if row.state == EndpointState.DELETING.value:
                    if failure is None or plan.target is None:
                        session.execute(delete(EndpointRow).where(_unchanged(endpoint)))
                    continue
                if row.state not in _PENDING:
                    continue
                status = statuses.get(row.id, {})
                rolled_back = row.state_reason  # set while pending only by a rollback
                state, reason, url = EndpointState.FAILED.value, failure, row.predict_url
                if failure is not None:
                    pass
                elif not row.spec["deployed_models"]:
                    state, reason, url = EndpointState.READY.value, None, None
                elif status.get("status") == "RUNNING":
                    state, reason = EndpointState.READY.value, None
                    url = f"{url_base}{route_prefix(row.id)}"
                else:
                    message = str(status.get("message") or status.get("status") or "timed out")
                    reason = message.strip().splitlines()[-1][:1000]
                if rolled_back and state == EndpointState.READY.value:
                    # The others serve (predict_url stays); the deploy itself failed.
                    state, reason = EndpointState.FAILED.value, rolled_back
                session.execute(
                    update(EndpointRow)
                    .where(_unchanged(endpoint))
                    .values(state=state, state_reason=reason, predict_url=url)
                )


def _unchanged(endpoint: _EndpointPlan) -> Any:
    """The row as planned: same id, same generation."""
    return (EndpointRow.id == endpoint.id) & (EndpointRow.generation == endpoint.generation)
