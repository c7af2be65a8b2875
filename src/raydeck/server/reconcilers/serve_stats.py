"""Traffic that goes straight to the Serve data plane, in the control plane's ``/metrics``.

Predict calls sent to an endpoint's ``predict_url`` never pass the control plane, but every
endpoint ingress counts them per deployed model and answers ``GET <predict_url>/stats``
(see ``raydeck.runtime.serving.ingress``). This loop polls each READY endpoint with its
cluster's Ray auth token (the ingress knows only its sha256), short timeouts, and keeps the
last answer of every ingress replica in ``ServeTraffic`` (raydeck.server.metrics), which
exports the sums as Prometheus counters and a latency histogram.
An endpoint that does not answer is skipped until the next pass; the loop never fails.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from sqlalchemy import select

from raydeck.core.models import EndpointState
from raydeck.db.models import ClusterRow, EndpointRow
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services.clusters import ray_token
from raydeck.server.state import ServerState

__all__ = ["STATS_TIMEOUT_SECONDS", "ServeStatsPoller"]

log = logging.getLogger(__name__)

STATS_TIMEOUT_SECONDS = 5.0
_MIN_INTERVAL = 5.0  # one small GET per endpoint per pass: cheap, but no need to spin


@dataclass(frozen=True)
class _Target:
    endpoint_id: str
    project: str
    name: str
    stats_url: str
    token: str


class ServeStatsPoller:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.traffic = state.metrics.serve_traffic
        interval = max(state.settings.reconcile_interval * 5, _MIN_INTERVAL)
        self.loop = ReconcileLoop("serve-stats", interval, self.tick)

    async def tick(self) -> None:
        targets, existing = await asyncio.to_thread(self._targets)
        self.traffic.forget_except(existing)
        if not targets:
            return
        async with httpx.AsyncClient(timeout=STATS_TIMEOUT_SECONDS) as client:
            await asyncio.gather(*(self._poll(client, t) for t in targets))

    def _targets(self) -> tuple[list[_Target], set[str]]:
        with self.state.db.session() as session:
            rows = session.execute(
                select(EndpointRow, ClusterRow).join(
                    ClusterRow, ClusterRow.id == EndpointRow.cluster_id
                )
            ).all()
            existing = set(session.scalars(select(EndpointRow.id)))
        targets = [
            _Target(
                row.id,
                row.project,
                row.name,
                f"{row.predict_url}/stats",
                ray_token(self.state.settings, cluster),
            )
            for row, cluster in rows
            if row.state == EndpointState.READY.value and row.predict_url
        ]
        return targets, existing

    async def _poll(self, client: httpx.AsyncClient, target: _Target) -> None:
        try:
            answer = await client.get(
                target.stats_url, headers={"Authorization": f"Bearer {target.token}"}
            )
            answer.raise_for_status()
            payload = answer.json()
            if payload.get("endpoint_id") != target.endpoint_id:
                raise ValueError(f"answered for {payload.get('endpoint_id')!r}")
            self.traffic.record(target.endpoint_id, target.project, target.name, payload)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.debug("serve stats of endpoint %s: %s", target.name, exc)
