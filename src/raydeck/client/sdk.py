"""``RaydeckClient``: one object, one sub-API per resource.

from raydeck.client import RaydeckClient
rd = RaydeckClient()                       # RAYDECK_SERVER / RAYDECK_TOKEN or ~/.raydeck
rd.clusters.create(ClusterCreate(name="dev", worker_pools=[...]))
rd.clusters.wait("dev")
job = rd.jobs.submit("dev", "python train.py", working_dir=".")
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from raydeck.client.batch_predictions import BatchPredictionApi
from raydeck.client.config import load_client_config
from raydeck.client.connections import ConnectionApi
from raydeck.client.endpoints import BoundEndpoint, EndpointApi
from raydeck.client.hosts import HostApi
from raydeck.client.http import ApiTransport, raise_for_error
from raydeck.client.models import ModelApi
from raydeck.client.operations import AccessApi, BillingApi, LogApi, MetricsApi
from raydeck.client.training import CustomJobApi, TrainingPipelineApi, TuningJobApi
from raydeck.core.errors import FailedPreconditionError, UnavailableError
from raydeck.core.models import (
    Caller,
    Cluster,
    ClusterCreate,
    ClusterState,
    ClusterUpdate,
    Job,
    JobState,
    JobSubmit,
    Page,
    PoolReplicaUpdate,
    Token,
    TokenCreate,
    TokenCreated,
)
from raydeck.core.models.jobs import TERMINAL_JOB_STATES

__all__ = ["ClusterApi", "JobApi", "RaydeckClient", "TokenApi"]


class ClusterApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create(self, request: ClusterCreate) -> Cluster:
        data = self._api.request("POST", "/api/v1/clusters", json=request.model_dump(mode="json"))
        return Cluster.model_validate(data)

    def get(self, name: str) -> Cluster:
        return Cluster.model_validate(self._api.request("GET", f"/api/v1/clusters/{name}"))

    def list(
        self,
        *,
        state: ClusterState | None = None,
        label: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Cluster]:
        data = self._api.request(
            "GET",
            "/api/v1/clusters",
            params={
                "state": state,
                "label": label,
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[Cluster].model_validate(data)

    def scale(self, name: str, pool: str, replica_count: int) -> Cluster:
        change = PoolReplicaUpdate(name=pool, replica_count=replica_count)
        return self.update(name, ClusterUpdate(worker_pools=[change]))

    def update(self, name: str, request: ClusterUpdate) -> Cluster:
        data = self._api.request(
            "PATCH",
            f"/api/v1/clusters/{name}",
            json=request.model_dump(mode="json", exclude_none=True),
        )
        return Cluster.model_validate(data)

    def delete(self, name: str) -> Cluster:
        return Cluster.model_validate(self._api.request("DELETE", f"/api/v1/clusters/{name}"))

    def repair(self, name: str) -> Cluster:
        """Start a cluster in ERROR over again (its backend places it afresh)."""
        data = self._api.request("POST", f"/api/v1/clusters/{name}/repair")
        return Cluster.model_validate(data)

    def wait(self, name: str, *, timeout: float = 300.0, poll: float = 0.25) -> Cluster:
        """Until the cluster is RUNNING; raises on ERROR or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            cluster = self.get(name)
            if cluster.state is ClusterState.RUNNING:
                return cluster
            if cluster.state is ClusterState.ERROR:
                raise FailedPreconditionError(
                    f"cluster {name!r} failed: {cluster.state_reason}", field="cluster"
                )
            if time.monotonic() > deadline:
                raise UnavailableError(f"cluster {name!r} still {cluster.state} after {timeout}s")
            time.sleep(poll)

    def wait_deleted(self, name: str, *, timeout: float = 120.0, poll: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(c.name == name for c in self.list(page_size=1000).items):
                return
            time.sleep(poll)
        raise UnavailableError(f"cluster {name!r} still stopping after {timeout}s")


class JobApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def submit(
        self,
        cluster: str,
        entrypoint: str,
        *,
        working_dir: str | Path | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        submission_id: str | None = None,
    ) -> Job:
        runtime_env = dict(runtime_env or {})
        if working_dir is not None:
            runtime_env["working_dir"] = str(working_dir)
        if _has_local_paths(runtime_env):
            runtime_env = self._upload_local_paths(cluster, runtime_env)
        request = JobSubmit(
            entrypoint=entrypoint,
            runtime_env=runtime_env or None,
            metadata=metadata or {},
            submission_id=submission_id,
        )
        data = self._api.request(
            "POST", f"/api/v1/clusters/{cluster}/jobs", json=request.model_dump(mode="json")
        )
        return Job.model_validate(data)

    def _upload_local_paths(self, cluster: str, runtime_env: dict[str, Any]) -> dict[str, Any]:
        """Package local working_dir/py_modules with Ray's own packaging, uploaded through the
        cluster's Ray Jobs proxy, so the runtime_env sent on refers to ``gcs://`` URIs.

        The cluster is checked first through the proxy itself: a cluster that does not exist
        (or is not running, or not the caller's) gets the same error as a submit without
        local paths, not Ray's "Version check returned 404" guess about old Ray versions."""
        from raydeck.client.packaging import upload_local_paths

        self._api.request("GET", f"/api/v1/clusters/{cluster}/ray/api/version")
        return upload_local_paths(
            f"{self._api.server}/api/v1/clusters/{cluster}/ray", self._api.token, runtime_env
        )

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._api.request("GET", f"/api/v1/jobs/{job_id}"))

    def list(
        self,
        *,
        cluster: str | None = None,
        state: JobState | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Job]:
        data = self._api.request(
            "GET",
            "/api/v1/jobs",
            params={
                "cluster": cluster,
                "state": state,
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[Job].model_validate(data)

    def stop(self, job_id: str) -> Job:
        return Job.model_validate(self._api.request("POST", f"/api/v1/jobs/{job_id}:stop"))

    def delete(self, job_id: str) -> Job:
        return Job.model_validate(self._api.request("DELETE", f"/api/v1/jobs/{job_id}"))

    def logs(self, job_id: str) -> str:
        return str(self._api.request("GET", f"/api/v1/jobs/{job_id}/logs"))

    def follow_logs(self, job_id: str) -> Iterator[str]:
        """Yield log text as the job writes it, until it ends."""
        with self._api.http.stream(
            "GET",
            f"/api/v1/jobs/{job_id}/logs",
            params={"follow": "true"},
            timeout=httpx.Timeout(30.0, read=None),
        ) as response:
            if not response.is_success:
                response.read()
                raise_for_error(response)
            yield from response.iter_text()

    def wait(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.2) -> Job:
        """Until the job is SUCCEEDED, FAILED or STOPPED."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in TERMINAL_JOB_STATES:
                return job
            if time.monotonic() > deadline:
                raise UnavailableError(f"job {job_id!r} still {job.state} after {timeout}s")
            time.sleep(poll)


class TokenApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create(
        self,
        name: str,
        *,
        role: str | None = None,
        project: str | None = None,
        account: str | None = None,
        expires_in_days: int | None = None,
    ) -> TokenCreated:
        """Without ``account``: a service account named ``name`` with ``role`` (default user)
        in ``project`` (default: every project). With ``account``: acts as that account."""
        request = TokenCreate.model_validate(
            {
                "name": name,
                "role": role,
                "project": project,
                "account": account,
                "expires_in_days": expires_in_days,
            }
        )
        data = self._api.request(
            "POST", "/api/v1/tokens", json=request.model_dump(mode="json", exclude_none=True)
        )
        return TokenCreated.model_validate(data)

    def list(self, *, page_size: int = 100, page_token: str | None = None) -> Page[Token]:
        data = self._api.request(
            "GET", "/api/v1/tokens", params={"page_size": page_size, "page_token": page_token}
        )
        return Page[Token].model_validate(data)

    def revoke(self, name_or_id: str) -> Token:
        return Token.model_validate(self._api.request("DELETE", f"/api/v1/tokens/{name_or_id}"))

    def whoami(self) -> Caller:
        return Caller.model_validate(self._api.request("GET", "/api/v1/tokens/self"))


def _has_local_paths(runtime_env: dict[str, Any]) -> bool:
    paths = [runtime_env.get("working_dir"), *runtime_env.get("py_modules", [])]
    return any(isinstance(p, str) and "://" not in p for p in paths)


class RaydeckClient:
    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        project: str | None = None,
    ) -> None:
        config = load_client_config(server, token, project=project)
        self._api = ApiTransport(
            config.server,
            config.token,
            timeout=timeout,
            transport=transport,
            project=config.project,
        )
        self.project = config.project or "default"
        self.server = config.server
        self.token = config.token  # the bearer token it sends (for Ray's JobSubmissionClient)
        self.clusters = ClusterApi(self._api)
        self.jobs = JobApi(self._api)
        self.tokens = TokenApi(self._api)
        self.models = ModelApi(self._api)
        self.endpoints = EndpointApi(self._api)
        self.batch_predictions = BatchPredictionApi(self._api)
        self.logs = LogApi(self._api)
        self.billing = BillingApi(self._api)
        self.access = AccessApi(self._api)
        self.metrics = MetricsApi(self._api)
        self.custom_jobs = CustomJobApi(self._api)
        self.tuning_jobs = TuningJobApi(self._api)
        self.training_pipelines = TrainingPipelineApi(self._api)
        self.connections = ConnectionApi(self._api)
        self.hosts = HostApi(self._api)

    def endpoint(self, endpoint: str) -> BoundEndpoint:
        """A handle whose ``predict`` goes straight to the endpoint's Serve data plane."""
        return BoundEndpoint(self._api, endpoint)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> RaydeckClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
