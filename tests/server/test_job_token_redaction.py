"""Job tokens never leave the server: not through Raydeck's job API, not through the Ray Jobs
proxy (any reader of jobs, viewers included, used to see a job's RAYDECK_TOKEN there).

Ray cannot run in-process, so the cluster's dashboard here is a small HTTP server speaking
the Ray Jobs REST shapes (what Ray 2.60 answers for submit, get, list and logs); the same
check against real Ray is in tests/e2e/test_training.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from raydeck.core.models import ClusterCreate
from raydeck.db.models import ClusterRow
from raydeck.server.services import job_tokens
from tests.conftest import Api

PROXY = "/api/v1/clusters/dev/ray"


class RayJobsWire(ThreadingHTTPServer):
    """Ray's Jobs REST API over the wire, keeping what was submitted."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: RayJobsWire

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = json.dumps(body).encode() if kind == "application/json" else str(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        submission_id = body.get("submission_id") or f"raysubmit_{len(self.server.jobs)}"
        self.server.jobs[submission_id] = {
            "type": "SUBMISSION",
            "job_id": None,
            "submission_id": submission_id,
            "driver_info": None,
            "status": "RUNNING",
            "entrypoint": body["entrypoint"],
            "message": "Job is currently running.",
            "error_type": None,
            "start_time": int(time.time() * 1000),
            "end_time": None,
            "metadata": body.get("metadata") or {},
            "runtime_env": body.get("runtime_env") or {},
            "driver_agent_http_address": "http://127.0.0.1:52365",
            "driver_node_id": "f" * 56,
            "driver_exit_code": None,
        }
        self._send(200, {"submission_id": submission_id})

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        jobs = self.server.jobs
        if path == "/api/jobs":
            self._send(200, list(jobs.values()))
            return
        parts = path.split("/")  # ["", "api", "jobs", id, ("logs")]
        job = jobs.get(parts[3]) if len(parts) >= 4 else None
        if job is None:
            self._send(404, {"result": False, "msg": "Job does not exist"})
        elif len(parts) == 5 and parts[4] == "logs":
            env = job["runtime_env"].get("env_vars", {})
            printed = "\n".join(f"{k}={v}" for k, v in env.items())  # a job printing its env
            self._send(200, {"logs": printed + "\n"})
        else:
            self._send(200, job)


@pytest.fixture
def ray_wire() -> Iterator[RayJobsWire]:
    server = RayJobsWire()
    server.thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dev(static_api: Api, ray_wire: RayJobsWire) -> Api:
    static_api.sdk().clusters.create(ClusterCreate(name="dev"))
    with static_api.app.state.raydeck.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", ray_wire.url
    return static_api


def test_injected_token_reaches_ray_but_no_reader(dev: Api, ray_wire: RayJobsWire) -> None:
    job = dev.sdk("user").jobs.submit(
        "dev", "python train.py", runtime_env={"env_vars": {"A": "1"}}
    )
    sent_env = ray_wire.jobs[job.submission_id]["runtime_env"]["env_vars"]
    secret = sent_env["RAYDECK_TOKEN"]
    assert secret.startswith("rdk_") and sent_env["A"] == "1"  # the job itself gets it

    viewer = dev.headers("viewer")
    listed = dev.http.get(f"{PROXY}/api/jobs/", headers=viewer)
    one = dev.http.get(f"{PROXY}/api/jobs/{job.submission_id}", headers=viewer)
    logs = dev.http.get(f"{PROXY}/api/jobs/{job.submission_id}/logs", headers=viewer)
    ours = dev.http.get(f"/api/v1/jobs/{job.id}", headers=viewer)
    our_logs = dev.http.get(f"/api/v1/jobs/{job.id}/logs", headers=viewer)
    for response in (listed, one, logs, ours, our_logs):
        assert response.status_code == 200, response.text
        assert secret not in response.text
    assert listed.json()[0]["runtime_env"]["env_vars"] == {
        "A": "1",
        "RAYDECK_SERVER": dev.settings.advertised_url,
        "RAYDECK_TOKEN": job_tokens.REDACTED,
    }
    assert one.json()["runtime_env"]["env_vars"]["RAYDECK_TOKEN"] == job_tokens.REDACTED
    assert f"RAYDECK_TOKEN={job_tokens.REDACTED}" in logs.json()["logs"]
    assert "A=1" in our_logs.text and f"RAYDECK_TOKEN={job_tokens.REDACTED}" in our_logs.text


def test_a_token_the_submitter_set_is_not_shown_either(dev: Api, ray_wire: RayJobsWire) -> None:
    mine = {"env_vars": {"RAYDECK_TOKEN": "my-own-secret", "B": "2"}}
    job = dev.sdk("user").jobs.submit("dev", "python train.py", runtime_env=mine)
    assert ray_wire.jobs[job.submission_id]["runtime_env"]["env_vars"]["RAYDECK_TOKEN"] == (
        "my-own-secret"
    )
    viewer = dev.headers("viewer")
    for path in (
        f"/api/v1/jobs/{job.id}",
        f"{PROXY}/api/jobs/{job.submission_id}",
        f"{PROXY}/api/jobs/",
    ):
        response = dev.http.get(path, headers=viewer)
        assert response.status_code == 200 and "my-own-secret" not in response.text, path
    env = dev.sdk("viewer").jobs.get(job.id).runtime_env or {}
    assert env["env_vars"] == {"RAYDECK_TOKEN": job_tokens.REDACTED, "B": "2"}
    listed = dev.sdk("viewer").jobs.list().items
    assert all("my-own-secret" not in json.dumps(j.runtime_env) for j in listed)


def test_redaction_of_bodies_keeps_everything_else() -> None:
    secret = "rdk_" + "a1B2-_" * 7 + "z"
    nested = json.dumps({"env_vars": {"RAYDECK_TOKEN": secret, "X": "rdk_short"}})
    body = json.dumps([{"runtime_env_info": {"serialized_runtime_env": nested}, "n": 1}])
    cleaned = job_tokens.redact_json_body(body.encode()).decode()
    assert secret not in cleaned and "rdk_short" in cleaned and '"n": 1' in cleaned
    assert job_tokens.redact_json_body(b"\x89PNG binary") == b"\x89PNG binary"
    assert job_tokens.redact_runtime_env(None) is None
    assert job_tokens.redact_runtime_env({"pip": ["x"]}) == {"pip": ["x"]}
