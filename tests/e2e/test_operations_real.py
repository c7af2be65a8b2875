"""Operations on real Ray, through a real server process: a job's output is found by a log
query (and `raydeck logs --follow`), so is the traceback of a predict error in the endpoint's
Serve replica log, and a budget breach stops a running job and refuses a new cluster — in a
project of its own, so the session's other tests are not affected."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ray.job_submission import JobSubmissionClient

from raydeck.client import RaydeckClient
from raydeck.core.errors import RaydeckError, ResourceExhaustedError, UnavailableError
from raydeck.core.models import ClusterCreate, JobState
from raydeck.core.models.operations import BudgetUpdate, LogEntry
from tests.cli.test_cli import raydeck
from tests.ray_fixtures import LiveServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Real Ray reports logs and metrics every few seconds.
_wait_for = partial(wait_until, timeout=90.0, interval=0.5)

PROJECT = "ops-e2e"
MARKER = "raydeck-ops-marker-7319"


@pytest.fixture(scope="module")
def ops_client(live_server: LiveServer) -> Iterator[RaydeckClient]:
    with live_server.client() as admin:
        admin.access.create_project(PROJECT)
    client = RaydeckClient(live_server.url, live_server.token, timeout=120, project=PROJECT)
    client.clusters.create(ClusterCreate.model_validate({"name": "ops", "head": {"num_cpus": 1}}))
    try:
        client.clusters.wait("ops", timeout=180)
        yield client
    finally:
        client.clusters.delete("ops")
        client.clusters.wait_deleted("ops", timeout=120)
        client.close()


def test_job_output_is_found_by_log_query(
    live_server: LiveServer, ops_client: RaydeckClient
) -> None:
    job = ops_client.jobs.submit(
        "ops", f"python -c \"print('{MARKER}'); import sys; print('boom', file=sys.stderr)\""
    )
    assert ops_client.jobs.wait(job.id, timeout=180).state is JobState.SUCCEEDED
    found = _wait_for(
        lambda: ops_client.logs.query(f"job/{job.id}", text=MARKER).items, "the job's output"
    )
    # Ray's own "Running entrypoint ..." line quotes the command; the output line is exact.
    [entry] = [e for e in found if e.text == MARKER]  # type: ignore[attr-defined]
    assert entry.project == PROJECT and entry.source == "ray-jobs-api"
    assert entry.resource_name == job.submission_id
    # Found by submission id too; not visible from another project.
    assert ops_client.logs.query(f"job/{job.submission_id}", text=MARKER).items
    with live_server.client() as default_project:
        assert default_project.logs.query(f"job/{job.id}").items == []
    env = {**live_server.client_env(), "RAYDECK_PROJECT": PROJECT}
    followed = raydeck(env, "logs", f"job/{job.id}", "--follow", "--poll", "0.3")
    assert followed.returncode == 0, followed.stderr
    assert MARKER in followed.stdout and "boom" in followed.stdout
    # The head's Ray daemon logs are collected as the cluster's.
    assert _wait_for(lambda: ops_client.logs.query("cluster/ops", page_size=5).items, "raylet")


def test_ray_metrics_are_reachable_per_cluster(ops_client: RaydeckClient) -> None:
    api = ops_client._api
    [target] = api.request("GET", "/api/v1/clusters/ops/rayMetrics")
    assert target["labels"]["node"] == "head" and target["labels"]["raydeck_project"] == PROJECT

    def ray_families() -> set[str]:
        try:
            text = api.request("GET", "/api/v1/clusters/ops/rayMetrics/head")
        except UnavailableError:
            return set()
        return {f.name for f in text_string_to_metric_families(text) if f.name.startswith("ray_")}

    assert _wait_for(ray_families, "Ray's own metrics on the head")


POISON = "poison-7319"
PICKY_PREDICTOR = f"""
class Picky:
    def predict(self, instances):
        if "{POISON}" in instances:
            raise ValueError("cannot score {POISON}")
        return [len(str(x)) for x in instances]
"""


def test_a_predict_error_is_found_in_the_endpoints_replica_logs(
    ops_client: RaydeckClient, tmp_path: Path
) -> None:
    artifact = tmp_path / "picky"
    artifact.mkdir()
    (artifact / "predictor.py").write_text(textwrap.dedent(PICKY_PREDICTOR))
    (artifact / "raydeck_predictor.json").write_text('{"class": "predictor:Picky"}')
    ops_client.models.upload("picky-ops", artifact, "custom")
    ops_client.endpoints.create("picky-api", cluster="ops")
    try:
        ops_client.endpoints.deploy("picky-api", "picky-ops", num_cpus=0.25)
        ops_client.endpoints.wait("picky-api", timeout=300)
        endpoint = ops_client.endpoint("picky-api")  # the data plane: no relay log record
        assert endpoint.predict(["ok"]).predictions == [2]
        with pytest.raises(RaydeckError, match=f"cannot score {POISON}"):
            endpoint.predict([POISON])

        def replica_errors(text: str) -> list[LogEntry]:
            found = ops_client.logs.query("endpoint/picky-api", severity="ERROR", text=text)
            return [e for e in found.items if "/serve/replica_" in e.source]

        wanted = f"ValueError: cannot score {POISON}"
        _wait_for(lambda: replica_errors(wanted), "the traceback in the replica log")
        [last] = replica_errors(wanted)
        assert last.text.strip() == wanted
        assert (last.project, last.resource_name) == (PROJECT, "picky-api")
        assert replica_errors("Traceback (most recent call last)")
        # The request that succeeded left no ERROR record; the endpoint's INFO lines are there.
        every = ops_client.logs.query("endpoint/picky-api", page_size=500).items
        assert {e.severity.value for e in every} >= {"INFO", "ERROR"}
    finally:
        ops_client.endpoints.delete("picky-api")


def test_budget_breach_stops_the_running_job_and_refuses_a_cluster(
    live_server: LiveServer, ops_client: RaydeckClient
) -> None:
    job = ops_client.jobs.submit(
        "ops", "python -c \"import time\nwhile True: print('tick', flush=True); time.sleep(1)\""
    )
    _wait_for(lambda: ops_client.jobs.get(job.id).state is JobState.RUNNING, "the job to run")
    # Any cost at all breaches this limit: the next billing pass enforces it.
    budget = ops_client.billing.set_budget(
        PROJECT, BudgetUpdate(alert_amount=1e-9, limit_amount=1e-9)
    )
    assert budget.exhausted_at is None
    stopped = _wait_for(
        lambda: ops_client.jobs.get(job.id).state is JobState.STOPPED, "the job to be stopped"
    )
    assert stopped
    assert ops_client.billing.get_budget(PROJECT).exhausted_at is not None
    with pytest.raises(ResourceExhaustedError):
        ops_client.clusters.create(ClusterCreate.model_validate({"name": "another"}))
    with pytest.raises(ResourceExhaustedError):
        ops_client.jobs.submit("ops", "echo refused")
    ray_jobs = JobSubmissionClient(
        f"{live_server.url}/api/v1/clusters/ops/ray",
        headers={"Authorization": f"Bearer {live_server.token}", "X-Raydeck-Project": PROJECT},
    )
    with pytest.raises(RuntimeError, match="budget limit"):
        ray_jobs.submit_job(entrypoint="echo refused too")
    enforced = ops_client.access.audit(actor="system", action="budgets.enforce").items
    assert any(job.id in (e.detail or "") for e in enforced)
    report = ops_client.billing.report("job")
    assert any(row.key == job.id and row.amount > 0 for row in report.rows)
    # Lift the stop so the module's cleanup (and later tests) run normally.
    ops_client.billing.delete_budget(PROJECT)
