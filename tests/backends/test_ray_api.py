"""RayDashboardClient: error translation over httpx.MockTransport, then the real Jobs API."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from raydeck.backends.ray_api import (
    ClusterLoad,
    RayDashboardClient,
    RayJobInfo,
    clean_ray_message,
)
from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from tests.raw_ray import RawHead, raw_head

T = TypeVar("T")

# Bodies as Ray 2.60 sent them (captured from a live dashboard).
RAY_400_BODY = """Traceback (most recent call last):
  File "/ray/dashboard/modules/job/utils.py", line 128, in parse_and_validate_request
    return validate_request_type(json_data, request_type)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/ray/dashboard/modules/job/common.py", line 483, in __post_init__
    raise TypeError(f"entrypoint must be a string, got {type(self.entrypoint)}")
TypeError: entrypoint must be a string, got <class 'int'>
"""
RAY_NESTED_500_BODY = """Traceback (most recent call last):
  File "/ray/dashboard/modules/job/job_head.py", line 134, in _raise_error
    raise RuntimeError(f"Request failed with status code {status}: {error_text}.")
RuntimeError: Request failed with status code 400: Traceback (most recent call last):
  File "/ray/dashboard/modules/job/job_manager.py", line 553, in submit_job
    raise ValueError(
ValueError: Job with submission_id j1 already exists. Please use a different submission_id.
.
"""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> RayDashboardClient:
    return RayDashboardClient("http://ray.test:8265", "tok", transport=httpx.MockTransport(handler))


def answer(status: int, text: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, text=text)


async def call_get_job(client: RayDashboardClient) -> RayJobInfo:
    async with client:
        return await client.get_job("j1")


# -- error translation (no Ray) -------------------------------------------------------------


def test_unreachable_dashboard_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(UnavailableError, match="cannot reach Ray dashboard"):
        run(call_get_job(mock_client(refuse)))


def test_closed_port_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RayDashboardClient(f"http://127.0.0.1:{port}", "tok", timeout=5)
    with pytest.raises(UnavailableError):
        run(call_get_job(client))


def test_400_traceback_becomes_one_line_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        run(call_get_job(mock_client(answer(400, RAY_400_BODY))))
    assert info.value.message == "entrypoint must be a string, got <class 'int'>"
    assert "\n" not in info.value.message and "Traceback" not in info.value.message


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, "Job j1 does not exist", NotFoundError),
        (500, RAY_NESTED_500_BODY, AlreadyExistsError),
        (
            500,
            "RuntimeError: Attempted to delete job 'j1', but it is in a non-terminal state "
            "RUNNING.\n.\n",
            FailedPreconditionError,
        ),
        (403, "Forbidden: Invalid authentication token", FailedPreconditionError),
        (500, "No available agent to submit job, please try again later.", UnavailableError),
        (500, json.dumps({"result": False, "msg": "GCS timed out"}), UnavailableError),
    ],
)
def test_ray_status_codes_map_to_error_tree(status: int, body: str, error: type) -> None:
    with pytest.raises(error) as info:
        run(call_get_job(mock_client(answer(status, body))))
    assert "\n" not in str(info.value)


def test_unexpected_answer_shape_is_unavailable() -> None:
    with pytest.raises(UnavailableError, match="unexpected Ray dashboard answer"):
        run(call_get_job(mock_client(lambda r: httpx.Response(200, json=["not", "a", "job"]))))


def test_clean_ray_message_keeps_innermost_error() -> None:
    assert clean_ray_message(RAY_NESTED_500_BODY) == (
        "Job with submission_id j1 already exists. Please use a different submission_id."
    )
    assert clean_ray_message("\n  \n.\n") == "Ray request failed"


def test_submit_sends_token_and_only_set_fields() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"job_id": None, "submission_id": "abc"})

    async def go() -> str:
        async with mock_client(handler) as client:
            return await client.submit_job("echo hi", entrypoint_num_cpus=0.5)

    assert run(go()) == "abc"
    assert seen[0].url.path == "/api/jobs/"
    assert seen[0].headers["Authorization"] == "Bearer tok"
    assert json.loads(seen[0].content) == {"entrypoint": "echo hi", "entrypoint_num_cpus": 0.5}


def test_get_job_parses_ms_epoch() -> None:
    body = {
        "submission_id": "j1",
        "status": "SUCCEEDED",
        "entrypoint": "echo",
        "message": "ok",
        "start_time": 1795598662047,
        "end_time": None,
        "metadata": {"a": "b"},
    }
    job = run(call_get_job(mock_client(lambda r: httpx.Response(200, json=body))))
    assert job.start_time is not None and job.start_time.timestamp() == 1795598662.047
    assert job.end_time is None and job.metadata == {"a": "b"}


def test_cluster_load_parses_ray_report() -> None:
    report = {
        "resourceDemand": [[{"CPU": 1.0, "my_accel": 1.0}, 2]],
        "pgDemand": [[{"bundles": [[{"CPU": 1.0}, 2]], "strategy": "STRICT_PACK"}, 1]],
        "requestDemand": [],
        # the dashboard camelCases these keys, resource names included
        "usageByNode": {"n1": {"CPU": [1.0, 2.0], "myAccel": [0.0, 1.0]}},
    }
    idle = "Cluster status\n - NodeIdleSeconds: Min=7 Mean=7 Max=7\n"
    status = {
        "autoscalingStatus": idle,
        "clusterStatus": {"time": 1.7e9, "loadMetricsReport": report},
    }
    raylet = {"nodeId": "n1", "state": "ALIVE", "nodeManagerAddress": "10.0.0.5"}
    totals = {"CPU": 2.0, "my_accel": 1.0, "node:10.0.0.5": 1.0}
    node = {"node_id": "n1", "state": "ALIVE", "is_head_node": True, "resources_total": totals}
    summary = {"summary": [{"raylet": raylet | {"nodeManagerPort": 41007}}]}
    states = {"result": {"result": [node]}}
    routes = {"/api/cluster_status": status, "/nodes": summary, "/api/v0/nodes": states}

    async def go() -> ClusterLoad:
        fake = mock_client(lambda r: httpx.Response(200, json={"data": routes[r.url.path]}))
        async with fake as client:
            return await client.cluster_load()

    load = run(go())
    assert load.demands == ({"CPU": 1.0, "my_accel": 1.0},) * 2 + ({"CPU": 1.0},) * 2
    assert load.placement_groups[0].strategy == "STRICT_PACK"
    (head,) = load.nodes
    assert head.address == "10.0.0.5:41007" and head.is_head
    assert head.available == {"CPU": 1.0, "my_accel": 1.0, "node:10.0.0.5": 1.0}
    assert head.busy and head.idle_seconds == 0.0


# -- live: a raw `ray start` cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RawHead]:
    with raw_head() as head:
        yield head


async def eventually(
    probe: Callable[[], Coroutine[Any, Any, T]],
    accept: Callable[[T], bool],
    *,
    timeout: float = 120.0,
) -> T:
    """Poll ``probe`` until ``accept`` holds (Ray's monitor reports every ~5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition never held; last value: {value!r}")
        await asyncio.sleep(0.5)


def py(code: str) -> str:
    return f"{sys.executable} -c {shlex.quote(code)}"


@pytest.mark.ray
def test_job_submit_logs_delete(ray_cluster: RawHead) -> None:
    async def go() -> None:
        async with RayDashboardClient(ray_cluster.dashboard_url, ray_cluster.token) as ray:
            assert (await ray.version())["ray_version"] == "2.60.0"
            sid = await ray.submit_job(py("print('hello-raydeck')"), metadata={"owner": "t"})
            job = await eventually(
                lambda: ray.get_job(sid), lambda j: j.status in {"SUCCEEDED", "FAILED"}
            )
            assert job.status == "SUCCEEDED", job.message
            assert job.start_time is not None and job.end_time is not None
            assert job.metadata == {"owner": "t"}
            assert "hello-raydeck" in await ray.get_job_logs(sid)
            assert sid in {j.submission_id for j in await ray.list_jobs()}
            with pytest.raises(AlreadyExistsError):
                await ray.submit_job("echo again", submission_id=sid)
            assert await ray.delete_job(sid) is True
            with pytest.raises(NotFoundError):
                await ray.get_job(sid)

    run(go())


@pytest.mark.ray
def test_job_stop_and_unknown_job(ray_cluster: RawHead) -> None:
    async def go() -> None:
        async with RayDashboardClient(ray_cluster.dashboard_url, ray_cluster.token) as ray:
            sid = await ray.submit_job("sleep 300", submission_id="rdk-stop-me")
            await eventually(lambda: ray.get_job(sid), lambda j: j.status == "RUNNING")
            with pytest.raises(FailedPreconditionError):
                await ray.delete_job(sid)  # Ray refuses to delete a running job
            assert await ray.stop_job(sid) is True
            await eventually(lambda: ray.get_job(sid), lambda j: j.status == "STOPPED")
            for call in (ray.get_job, ray.stop_job, ray.delete_job, ray.get_job_logs):
                with pytest.raises(NotFoundError):
                    await call("no-such-job")
        async with RayDashboardClient(ray_cluster.dashboard_url, "wrong-token") as ray:
            with pytest.raises(FailedPreconditionError):
                await ray.list_jobs()

    run(go())


DEMAND_DRIVER = """
import time, ray
from ray.util.placement_group import placement_group
ray.init()
@ray.remote(resources={"accel": 1})
def needs_accel():
    return 1
refs = [needs_accel.remote() for _ in range(3)]
pg = placement_group([{"CPU": 1, "accel": 1}], strategy="STRICT_PACK")
time.sleep(600)
"""
BUSY_DRIVER = """
import time, ray
ray.init()
@ray.remote(num_cpus=1)
def hold():
    time.sleep(600)
ref = hold.remote()
time.sleep(600)
"""


@pytest.mark.ray
def test_cluster_load_demand_busy_and_idle(ray_cluster: RawHead) -> None:
    async def go() -> None:
        async with RayDashboardClient(ray_cluster.dashboard_url, ray_cluster.token) as ray:
            # A fresh cluster answers UnavailableError until the monitor's first report.
            async def first_report() -> ClusterLoad | None:
                try:
                    return await ray.cluster_load()
                except UnavailableError:
                    return None

            load = await eventually(first_report, lambda lo: lo is not None)
            assert load is not None
            (head,) = load.nodes
            assert head.is_head and head.address.endswith(f":{ray_cluster.node_manager_port}")
            assert head.total["CPU"] == 1.0

            demand_job = await ray.submit_job(py(DEMAND_DRIVER))
            load = await eventually(
                ray.cluster_load,
                lambda lo: sum(1 for d in lo.demands if d.get("accel") == 1.0) >= 4,
            )
            assert {"CPU": 1.0, "accel": 1.0} in load.demands  # tasks: 1 CPU by default
            assert load.placement_groups[0].strategy == "STRICT_PACK"
            await ray.stop_job(demand_job)
            await eventually(ray.cluster_load, lambda lo: not lo.demands)

            busy_job = await ray.submit_job(py(BUSY_DRIVER))
            load = await eventually(ray.cluster_load, lambda lo: lo.nodes[0].busy)
            assert load.nodes[0].available["CPU"] == 0.0
            assert load.nodes[0].idle_seconds == 0.0
            await ray.stop_job(busy_job)

            # Idle time appears once nothing runs, then grows between monitor reports.
            first = await eventually(
                ray.cluster_load, lambda lo: (lo.nodes[0].idle_seconds or 0.0) > 0
            )
            first_idle = first.nodes[0].idle_seconds or 0.0
            later = await eventually(
                ray.cluster_load, lambda lo: (lo.nodes[0].idle_seconds or 0.0) > first_idle
            )
            assert not later.nodes[0].busy

    run(go())
