"""Issue 11 against a real server and a real cluster: the Ray Jobs proxy relays only the Jobs
API (finding 4), a job's token is its submitter's, narrowed (finding 6), a huge body is
refused without the server reading it (finding 3), and which Ray ports listen where
(finding 8)."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from raydeck.backends.local import find_cluster_processes
from raydeck.client import RaydeckClient
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _account(server: LiveServer, name: str, permissions: list[str]) -> str:
    """A token of a new account whose only binding is a custom role of ``permissions``."""
    admin = {"Authorization": f"Bearer {server.token}"}
    calls = [
        ("/api/v1/roles", {"name": f"{name}-role", "permissions": permissions}),
        ("/api/v1/accounts", {"name": name}),
        ("/api/v1/roleBindings", {"account": name, "role": f"{name}-role"}),
        ("/api/v1/tokens", {"name": f"{name}-t", "account": name}),
    ]
    answer = None
    for path, body in calls:
        answer = httpx.post(f"{server.url}{path}", json=body, headers=admin, timeout=30)
        assert answer.status_code == 201, answer.text
    assert answer is not None
    secret: str = answer.json()["secret"]
    return secret


def _wait_job(client: JobSubmissionClient, job_id: str, timeout: float = 180) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


def test_the_ray_proxy_relays_only_the_jobs_api(
    live_server: LiveServer, cluster: str, tmp_path: Path
) -> None:
    proxy = f"{live_server.url}/api/v1/clusters/{cluster}/ray"
    token = _account(live_server, "sub", ["jobs.submit", "jobs.get"])
    viewer = RaydeckClient(live_server.url, live_server.token).tokens.create(
        "sec-viewer", role="viewer"
    )
    for secret in (token, viewer.secret, live_server.token):
        headers = {"Authorization": f"Bearer {secret}"}
        for method, path in [
            ("DELETE", "/api/serve/applications/"),  # took an endpoint down (the attack)
            ("PUT", "/api/serve/applications/"),
            ("GET", "/api/serve/applications/"),
            ("GET", "/api/v0/nodes"),  # the state API
            ("GET", "/api/v0/logs"),
            ("GET", "/api/v0/logs/file?node_id=x&filename=raylet.out"),
            ("GET", "/nodes?view=summary"),
            ("GET", "/api/cluster_status"),
        ]:
            answer = httpx.request(method, f"{proxy}{path}", headers=headers, timeout=30)
            assert answer.status_code in (404, 405), (method, path, answer.status_code)

    # Ray's own Jobs SDK, unchanged, with only jobs.submit/jobs.get: a working_dir upload
    # (GET + PUT /api/packages), a submit, its status.
    (tmp_path / "hello.py").write_text("print('hello from', 'the proxy')\n")
    client = JobSubmissionClient(proxy, headers={"Authorization": f"Bearer {token}"})
    job_id = client.submit_job(
        entrypoint="python hello.py", runtime_env={"working_dir": str(tmp_path)}
    )
    assert _wait_job(client, job_id) == JobStatus.SUCCEEDED
    assert client.get_job_info(job_id).entrypoint == "python hello.py"
    with pytest.raises(AuthenticationError, match=r"may not jobs\.logs"):
        client.get_job_logs(job_id)  # jobs.logs is not among its permissions
    with pytest.raises(AuthenticationError, match=r"may not jobs\.list"):
        client.list_jobs()
    admin = JobSubmissionClient(proxy, headers={"Authorization": f"Bearer {live_server.token}"})
    assert "hello from the proxy" in admin.get_job_logs(job_id)
    assert job_id in {job.submission_id for job in admin.list_jobs()}


def test_a_jobs_token_is_its_submitters_narrowed(live_server: LiveServer, cluster: str) -> None:
    """Submitted through Raydeck's job API by an account with a narrow custom role: the job
    calls the control plane back with its injected token."""
    token = _account(live_server, "nora", ["jobs.submit", "jobs.get", "jobs.logs", "models.list"])
    script = textwrap.dedent(
        """
        import json, os, urllib.request
        def call(method, path, body=None):
            request = urllib.request.Request(
                os.environ["RAYDECK_SERVER"] + path, method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": "Bearer " + os.environ["RAYDECK_TOKEN"],
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request) as answer:
                    return answer.status, json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as error:
                return error.code, None
        status, me = call("GET", "/api/v1/tokens/self")
        print("SELF", me["account"], me["scope_project"])
        print("MODELS", call("GET", "/api/v1/models")[0])
        print("CLUSTERS", call("POST", "/api/v1/clusters", {"name": "evil"})[0])
        print("CONNECTIONS", call("GET", "/api/v1/connections")[0])
        print("SUBMIT", call("POST", "/api/v1/clusters/@CLUSTER@/jobs", {"entrypoint": "true"})[0])
        """
    ).replace("@CLUSTER@", cluster)
    headers = {"Authorization": f"Bearer {token}"}
    submitted = httpx.post(
        f"{live_server.url}/api/v1/clusters/{cluster}/jobs",
        json={"entrypoint": f"python -c {_quote(script)}"},
        headers=headers,
        timeout=60,
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 180
    while True:
        job = httpx.get(f"{live_server.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30)
        if job.json()["state"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        assert time.monotonic() < deadline, job.text
        time.sleep(0.5)
    logs = httpx.get(f"{live_server.url}/api/v1/jobs/{job_id}/logs", headers=headers, timeout=30)
    assert job.json()["state"] == "SUCCEEDED", logs.text
    lines = dict(line.split(" ", 1) for line in logs.text.splitlines() if " " in line)
    assert {"SELF", "MODELS", "CLUSTERS", "CONNECTIONS", "SUBMIT"} <= set(lines), logs.text
    assert lines["SELF"] == "nora default"
    assert lines["MODELS"] == "200"  # in her role and in a job's scope
    assert lines["CLUSTERS"] == "403"  # in neither
    assert lines["CONNECTIONS"] == "403"  # a job's scope has it, her role does not
    assert lines["SUBMIT"] == "403"  # her role has it, a job's scope does not


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_a_huge_body_is_refused_without_the_server_reading_it(live_server: LiveServer) -> None:
    assert live_server.process is not None
    server = psutil.Process(live_server.process.pid)
    headers = {"Authorization": f"Bearer {live_server.token}", "Content-Type": "application/json"}
    before = server.memory_info().rss

    def flood() -> Iterator[bytes]:  # 200 MB of JSON, chunked: no Content-Length to trust
        yield b'{"instances": ['
        for _ in range(200):
            yield b"[0.1, 0.2, 0.3, 0.4]," * 50_000

    streamed = httpx.post(
        f"{live_server.url}/api/v1/endpoints/e:predict", content=flood(), headers=headers
    )
    assert streamed.status_code == 413, streamed.text
    # A declared 50 MB body: answered from the header, before a byte of it is sent.
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as raw:
        raw.sendall(
            b"POST /api/v1/clusters HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\nAuthorization: Bearer "
            + live_server.token.encode()
            + b"\r\n\r\n"
        )
        assert raw.recv(200).startswith(b"HTTP/1.1 413")
    grown = server.memory_info().rss - before
    assert grown < 40 * 1024**2, f"the server grew by {grown / 1024**2:.0f} MiB"


# Where each port of a head's slot (backends/local/ports.py: base + offset) listens with the
# default RAYDECK_RAY_BIND_HOST=127.0.0.1. `ray start` turns a loopback --node-ip-address
# into the host's own IP (ray._private.services.resolve_ip_for_localhost), so the Ray
# processes that bind "the node IP" bind that one, and those that bind all interfaces unless
# the node IP is loopback (Prometheus exporters) bind all. Ray 2.60 has no flag for either.
LOOPBACK_ONLY = {7: "dashboard", 8: "Ray Client proxy", 9: "Serve HTTP proxy"}
NODE_IP = {2: "dashboard agent HTTP (also on loopback)", 5: "runtime env agent"}
ALL_INTERFACES = {
    0: "raylet node manager (gRPC)",
    1: "object manager (gRPC)",
    3: "dashboard agent (gRPC)",
    4: "metrics export (Prometheus)",
    6: "GCS (gRPC)",
    10: "autoscaler metrics (Prometheus)",
    11: "dashboard metrics (Prometheus)",
}  # plus every worker process's core-worker gRPC port (the slot's worker-port range)


def test_which_ray_ports_listen_where(live_client: RaydeckClient, cluster: str) -> None:
    """Records exactly which of a local cluster's ports are reachable beyond loopback (all
    but the HTTP dashboard, Ray Client and Serve); a port newly opened on a non-loopback
    address fails here. The gRPC ones demand the cluster's Ray token."""
    found = live_client.clusters.get(cluster)
    assert found.dashboard_url is not None
    base = int(found.dashboard_url.rsplit(":", 1)[1]) - 7
    hosts: dict[int, set[str]] = {}
    for process in find_cluster_processes(found.id):
        try:
            sockets = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in sockets:
            if conn.status == psutil.CONN_LISTEN:
                address = conn.laddr.ip.removeprefix("::ffff:")
                hosts.setdefault(conn.laddr.port, set()).add(address)
    loopback = {"127.0.0.1", "::1"}
    wildcard = {"0.0.0.0", "::"}
    exposed = {port - base for port, found_hosts in hosts.items() if found_hosts - loopback}
    for offset in LOOPBACK_ONLY:
        assert hosts.get(base + offset, loopback) <= loopback, (offset, hosts.get(base + offset))
    assert set(ALL_INTERFACES) - {4, 10, 11} <= exposed, sorted(exposed)
    workers = {o for o in exposed if o not in ALL_INTERFACES and o not in NODE_IP}
    assert all(12 <= o < 70 for o in workers), sorted(workers)  # the head's worker ports
    for offset in NODE_IP:  # the host's IP (plus loopback), never a wildcard
        assert not hosts.get(base + offset, set()) & wildcard, (offset, hosts[base + offset])
