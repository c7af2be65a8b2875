"""Cost metering (catalog price × node-seconds, by an injected clock), reports, budgets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from raydeck.core.models import ClusterState, JobState
from raydeck.core.models.operations import BillingDimension, PriceCatalog, UnitPrices
from raydeck.db.models import ClusterRow, CostMeterRow, EndpointRow, JobRow
from raydeck.server.reconcilers.clusters import APPLY_ATTEMPTS
from raydeck.server.services import billing
from tests.conftest import Api
from tests.waiting import wait_until

CATALOG = """
currency: EUR
default: {cpu_hour: 1.0, gpu_hour: 0, memory_gib_hour: 0}
machine_types:
  big: {hour: 10.0}
"""
HEAD_HOUR = 2.0  # head: 2 CPUs × 1.0
BIG_HOUR = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def billed_api(tmp_path: Path, clock: FakeClock) -> Iterator[Api]:
    catalog = tmp_path / "prices.yaml"
    catalog.write_text(CATALOG)
    server = Api(
        tmp_path / "home",
        run_reconcilers=True,
        clock=clock,
        price_catalog=catalog,
        billing_interval=0.05,
    )
    yield server
    server.close()


def _meter(api: Api, cluster: str, project: str = "default") -> CostMeterRow | None:
    with api.app.state.raydeck.db.session() as session:
        row = session.scalar(
            select(ClusterRow).where(ClusterRow.name == cluster, ClusterRow.project == project)
        )
        return session.get(CostMeterRow, row.id) if row is not None else None


def _observed(api: Api, cluster: str, nodes: int, at: datetime, project: str = "default") -> bool:
    meter = _meter(api, cluster, project)
    return bool(meter and meter.billable and len(meter.nodes) == nodes and meter.observed_at == at)


def _create(api: Api, name: str, replicas: int, project: str = "default") -> Any:
    body = {
        "name": name,
        "head": {"num_cpus": 2},
        "worker_pools": [{"name": "w", "machine_type": "big", "replica_count": replicas}],
    }
    headers = {**api.headers(), "X-Raydeck-Project": project}
    return api.http.post("/api/v1/clusters", json=body, headers=headers)


def test_cost_of_a_cluster_that_ran_was_resized_and_stopped(
    billed_api: Api, clock: FakeClock
) -> None:
    api, sdk = billed_api, billed_api.sdk()
    assert _create(api, "c1", replicas=2).status_code == 201
    sdk.clusters.wait("c1")
    t0 = clock.now
    wait_until(lambda: _observed(api, "c1", 3, t0), "the meter to see head + 2 workers")
    clock.advance(3600)
    sdk.clusters.scale("c1", "w", 1)
    wait_until(lambda: _observed(api, "c1", 2, clock.now), "the meter to see head + 1 worker")
    clock.advance(1800)
    sdk.clusters.delete("c1")
    sdk.clusters.wait_deleted("c1")
    wait_until(lambda: _meter(api, "c1") is None, "the meter to close")
    clock.advance(7200)  # after deletion nothing accrues any more
    api.http.post("/api/v1/projects", json={"name": "nudge"}, headers=api.headers())

    expected = (HEAD_HOUR + 2 * BIG_HOUR) * 1.0 + (HEAD_HOUR + BIG_HOUR) * 0.5
    report = api.http.get(
        "/api/v1/billing/report", params={"by": "cluster"}, headers=api.headers("viewer")
    ).json()
    assert report["currency"] == "EUR"
    [row] = report["rows"]
    assert row["name"] == "c1" and row["project"] == "default"
    assert row["amount"] == pytest.approx(expected, abs=1e-6)
    assert row["node_seconds"] == pytest.approx(3 * 3600 + 2 * 1800)
    by_project = sdk_report(api, "project")
    assert by_project["rows"][0]["key"] == "default"
    assert by_project["total"] == pytest.approx(expected, abs=1e-6)
    # A window covering only the second half hour prorates to that half hour.
    since = (t0 + timedelta(seconds=3600)).isoformat()
    window = api.http.get(
        "/api/v1/billing/report", params={"by": "cluster", "since": since}, headers=api.headers()
    ).json()
    assert window["total"] == pytest.approx((HEAD_HOUR + BIG_HOUR) * 0.5, abs=1e-6)


def sdk_report(api: Api, by: str) -> dict[str, Any]:
    response = api.http.get("/api/v1/billing/report", params={"by": by}, headers=api.headers())
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_nothing_accrues_while_provisioning_or_in_error(billed_api: Api, clock: FakeClock) -> None:
    api = billed_api
    api.backend.fail_next_apply = "no capacity"
    api.backend.failing_applies = APPLY_ATTEMPTS  # every retry fails too: ERROR
    assert _create(api, "broken", replicas=1).status_code == 201
    wait_until(
        lambda: api.sdk().clusters.get("broken").state is ClusterState.ERROR, "the cluster to fail"
    )
    wait_until(lambda: _meter(api, "broken") is not None, "a meter")
    clock.advance(3600)
    api.http.post("/api/v1/projects", json={"name": "wake"}, headers=api.headers())
    wait_until(lambda: _meter(api, "broken").observed_at == clock.now, "the next pass")  # type: ignore[union-attr]
    assert sdk_report(api, "cluster")["total"] == 0


def test_interval_cost_is_split_between_running_jobs_and_endpoints(static_api: Api) -> None:
    """Attribution rule, on the service with real rows: an interval's cost is the cluster's,
    and each running job / serving endpoint on the cluster gets an equal share of it."""
    catalog = PriceCatalog(default=UnitPrices(cpu_hour=3.6))  # 1 CPU node = 0.001 per second
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with static_api.app.state.raydeck.db.session() as session:
        session.add(
            ClusterRow(
                id="cl-1",
                name="c",
                state="RUNNING",
                backend="memory",
                ray_version="x",
                spec={
                    "head": {"num_cpus": 1},
                    "worker_pools": [],
                    "nodes": [{"name": "head", "pool": "head", "alive": True}],
                },
                ray_auth_token_ciphertext="(not read here)",
            )
        )
        for job_id in ("job-a", "job-b"):
            session.add(
                JobRow(
                    id=job_id,
                    cluster_id="cl-1",
                    cluster_name="c",
                    submission_id=job_id,
                    entrypoint="x",
                    state=JobState.RUNNING.value,
                )
            )
        session.flush()
        billing.accrue(session, catalog, t0)
        billing.accrue(session, catalog, t0 + timedelta(seconds=500))
        billing.accrue(session, catalog, t0 + timedelta(seconds=1000))  # extends the records
        session.get(JobRow, "job-b").state = JobState.SUCCEEDED.value  # type: ignore[union-attr]
        billing.accrue(session, catalog, t0 + timedelta(seconds=1500))  # still both (last seen)
        billing.accrue(session, catalog, t0 + timedelta(seconds=2000))  # job-a alone now
        report = billing.billing_report(
            session, by=BillingDimension.JOB, currency="USD", projects=None, since=None, until=None
        )
        amounts = {row.key: row.amount for row in report.rows}
        clusters = billing.billing_report(
            session,
            by=BillingDimension.CLUSTER,
            currency="USD",
            projects=None,
            since=None,
            until=None,
        )
    assert clusters.total == pytest.approx(2.0)
    assert amounts == pytest.approx({"job-a": 0.75 + 0.5, "job-b": 0.75})


def _add_endpoint(
    api: Api,
    project: str,
    cluster: str,
    *,
    min_replicas: int,
    max_replicas: int,
    endpoint_id: str = "ep-1",
) -> None:
    """An endpoint row as the API stores one after a deploy (no Serve here: in-memory backend)."""
    with api.app.state.raydeck.db.session() as session:
        cluster_row = session.scalar(
            select(ClusterRow).where(ClusterRow.project == project, ClusterRow.name == cluster)
        )
        assert cluster_row is not None
        model = {
            "id": "dm-1",
            "display_name": "m",
            "model": "m",
            "model_id": "mod-1",
            "model_version_id": "mv-1",
            "version_id": "1",
            "framework": "sklearn",
            "artifact_uri": "/nowhere",
            "min_replica_count": min_replicas,
            "max_replica_count": max_replicas,
            "num_cpus": 1,
            "num_gpus": 0,
            "created_at": "2026-01-01T00:00:00+00:00",
        }
        session.add(
            EndpointRow(
                id=endpoint_id,
                project=project,
                name="scorer",
                cluster_id=cluster_row.id,
                cluster_name=cluster,
                state="READY",
                spec={"deployed_models": [model], "traffic_split": {"dm-1": 100}},
            )
        )


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Webhook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/budget-hook", received
    server.shutdown()
    server.server_close()


def test_budget_alert_and_hard_limit(
    billed_api: Api, clock: FakeClock, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    api, (url, received) = billed_api, webhook
    admin = api.headers()
    assert (
        api.http.post("/api/v1/projects", json={"name": "team"}, headers=admin).status_code == 201
    )
    budget = {"alert_amount": 5, "limit_amount": 10, "webhook_url": url}
    # Only admins set budgets; users and viewers may read them.
    assert (
        api.http.put(
            "/api/v1/projects/team/budget", json=budget, headers=api.headers("user")
        ).status_code
        == 403
    )
    response = api.http.put("/api/v1/projects/team/budget", json=budget, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["spent"] == 0
    # The webhook URL (its path is often a secret) is shown as scheme and host only.
    for role in ("viewer", "admin"):
        shown = api.http.get("/api/v1/projects/team/budget", headers=api.headers(role)).json()
        assert shown["webhook_url"] == url.removesuffix("budget-hook") + "…", shown
    bad = api.http.put(
        "/api/v1/projects/team/budget", json={"alert_amount": 9, "limit_amount": 1}, headers=admin
    )
    assert bad.status_code == 400

    assert _create(api, "spender", replicas=2, project="team").status_code == 201
    wait_until(lambda: _observed(api, "spender", 3, clock.now, "team"), "metering")
    _add_endpoint(api, "team", "spender", min_replicas=1, max_replicas=3)
    # The same endpoint name in the default project: the team's limit must not touch it.
    assert _create(api, "home", replicas=1).status_code == 201
    _add_endpoint(api, "default", "home", min_replicas=1, max_replicas=3, endpoint_id="ep-2")
    clock.advance(1200)  # 22/h × 1/3 h = 7.33: over the alert, under the limit
    api.http.post("/api/v1/projects", json={"name": "wake1"}, headers=admin)
    wait_until(lambda: len(received) == 1, "the alert webhook")
    assert received[0]["kind"] == "alert" and received[0]["project"] == "team"
    assert received[0]["currency"] == "EUR"
    team = {**admin, "X-Raydeck-Project": "team"}
    assert api.http.get("/api/v1/projects/team/budget", headers=team).json()["exhausted_at"] is None

    clock.advance(1200)  # 14.67 now: over the hard limit
    api.http.post("/api/v1/projects", json={"name": "wake2"}, headers=admin)
    wait_until(lambda: len(received) == 2, "the limit webhook")
    assert received[1]["kind"] == "limit" and received[1]["spent"] >= 10
    state = api.http.get("/api/v1/projects/team/budget", headers=team).json()
    assert state["exhausted_at"] is not None and state["spent"] == pytest.approx(22 * 2400 / 3600)

    with api.app.state.raydeck.db.session() as session:
        capped = {
            row.project: (m["min_replica_count"], m["max_replica_count"])
            for row in session.scalars(select(EndpointRow).where(EndpointRow.name == "scorer"))
            for m in row.spec["deployed_models"]
        }
        assert capped == {"team": (1, 1), "default": (1, 3)}

    refused = _create(api, "more", replicas=1, project="team")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "resource_exhausted"
    assert _create(api, "elsewhere", replicas=1).status_code == 201  # other projects unaffected

    audit = api.http.get("/api/v1/audit", params={"action": "budgets."}, headers=admin).json()
    actions = [(e["actor"], e["action"], e["project"]) for e in audit["items"]]
    assert ("system", "budgets.alert", "team") in actions
    assert ("system", "budgets.enforce", "team") in actions
    enforced = next(e for e in audit["items"] if e["action"] == "budgets.enforce")
    assert "endpoints scaled to minimum: scorer" in enforced["detail"]
    assert ("admin-t", "budgets.update", "team") in actions
    refused_audit = api.http.get(
        "/api/v1/audit", params={"action": "clusters.create"}, headers=admin
    ).json()["items"]
    assert [e["outcome"] for e in refused_audit] == ["ok", "ok", "resource_exhausted", "ok"]

    # Raising the limit lifts the stop at once (re-evaluated at the next pass).
    raised = {"alert_amount": 50, "limit_amount": 100}
    assert (
        api.http.put("/api/v1/projects/team/budget", json=raised, headers=admin).status_code == 200
    )
    assert _create(api, "more", replicas=1, project="team").status_code == 201
