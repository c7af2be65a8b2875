"""Data-plane predict traffic in /metrics: the control plane polls each READY endpoint's
``GET <predict_url>/stats`` and exports per endpoint / deployed model counters.

The data plane here is a fake at the wire level (no Ray Serve in-process): a real HTTP server
that answers with a real ``IngressGuard``'s payload and token check, the same code an endpoint
replica runs. The real-Serve check is in tests/e2e/test_endpoints.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raydeck.db.models import ClusterRow, EndpointRow
from raydeck.runtime.serving.ingress import IngressGuard
from raydeck.server.reconcilers.serve_stats import ServeStatsPoller
from raydeck.server.secret_box import secret_box
from tests.conftest import Api

CLUSTER_TOKEN = "ray-cluster-secret"
MODELS = [{"id": "dm-a", "model": "churn"}, {"id": "dm-b", "model": "churn"}]


class _DataPlane:
    """Answers GET /<endpoint>/stats like an endpoint ingress replica does."""

    def __init__(self) -> None:
        self.guard = self.new_replica()
        self.seen_auth: list[str] = []
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                header = self.headers.get("authorization", "")
                plane.seen_auth.append(header)
                if not self.path.endswith("/stats") or not plane.guard.stats_allowed(header):
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(plane.guard.stats_payload()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ep-1"

    def new_replica(self) -> IngressGuard:
        token_hash = hashlib.sha256(CLUSTER_TOKEN.encode()).hexdigest()
        self.guard = IngressGuard("ep-1", "http://unused/authorize", MODELS, "team", token_hash)
        return self.guard


@pytest.fixture
def plane() -> Iterator[_DataPlane]:
    fake = _DataPlane()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _rows(api: Api, predict_url: str) -> None:
    with api.app.state.raydeck.db.session() as session:
        session.add(
            ClusterRow(
                id="cl-1",
                project="team",
                name="serve",
                state="RUNNING",
                backend="memory",
                ray_version="x",
                spec={},
                ray_auth_token_ciphertext=secret_box(
                    api.app.state.raydeck.settings.secret_key_path
                ).encrypt(CLUSTER_TOKEN),
            )
        )
        for endpoint_id, name, url in (
            ("ep-1", "scorer", predict_url),
            ("ep-2", "silent", "http://127.0.0.1:9/ep-2"),  # nothing listens: skipped
        ):
            session.add(
                EndpointRow(
                    id=endpoint_id,
                    project="team",
                    name=name,
                    cluster_id="cl-1",
                    cluster_name="serve",
                    state="READY",
                    predict_url=url,
                    spec={"deployed_models": MODELS, "traffic_split": {}},
                )
            )


def _poll(api: Api) -> None:
    async def once() -> None:
        await ServeStatsPoller(api.app.state.raydeck).tick()

    asyncio.run(once())


def _samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = api.http.get("/metrics", headers=api.headers("admin")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("raydeck_endpoint_serve")
        for s in family.samples
    }


def _label(dm: str, **extra: str) -> tuple[tuple[str, str], ...]:
    base = {"project": "team", "endpoint": "scorer", "deployed_model": dm, "model": "churn"}
    return tuple(sorted({**base, **extra}.items()))


def test_direct_predict_traffic_is_polled_into_metrics(static_api: Api, plane: _DataPlane) -> None:
    _rows(static_api, plane.url)
    for status, ms in ((200, 3.0), (200, 30.0), (200, 700.0), (503, 12.0)):
        plane.guard._count("dm-a", status, ms)
    plane.guard._count("dm-b", 200, 1.5)
    _poll(static_api)
    assert plane.seen_auth == [f"Bearer {CLUSTER_TOKEN}"]
    got = _samples(static_api)
    assert got[("raydeck_endpoint_serve_requests_total", _label("dm-a", code="200"))] == 3
    assert got[("raydeck_endpoint_serve_requests_total", _label("dm-a", code="503"))] == 1
    assert got[("raydeck_endpoint_serve_requests_total", _label("dm-b", code="200"))] == 1
    assert got[("raydeck_endpoint_serve_errors_total", _label("dm-a"))] == 1
    assert got[("raydeck_endpoint_serve_errors_total", _label("dm-b"))] == 0
    histogram = "raydeck_endpoint_serve_latency_seconds"
    assert got[(f"{histogram}_count", _label("dm-a"))] == 4
    assert got[(f"{histogram}_bucket", _label("dm-a", le="0.005"))] == 1
    assert got[(f"{histogram}_bucket", _label("dm-a", le="0.05"))] == 3
    assert got[(f"{histogram}_bucket", _label("dm-a", le="1.0"))] == 4
    assert got[(f"{histogram}_sum", _label("dm-a"))] == pytest.approx(0.745)
    # Nothing about the endpoint that did not answer, and the pass did not fail.
    assert not any(dict(labels).get("endpoint") == "silent" for _, labels in got)

    # The replica restarts (its counters start again from zero): the totals never go back.
    plane.new_replica()._count("dm-a", 200, 4.0)
    _poll(static_api)
    got = _samples(static_api)
    assert got[("raydeck_endpoint_serve_requests_total", _label("dm-a", code="200"))] == 4
    assert got[(f"{histogram}_count", _label("dm-a"))] == 5

    # A deleted endpoint's series end.
    with static_api.app.state.raydeck.db.session() as session:
        session.delete(session.get(EndpointRow, "ep-1"))
    _poll(static_api)
    assert _samples(static_api) == {}


def test_only_the_cluster_token_reads_stats_without_the_control_plane() -> None:
    token_hash = hashlib.sha256(CLUSTER_TOKEN.encode()).hexdigest()
    guard = IngressGuard("ep-1", "http://unused/authorize", MODELS, "team", token_hash)
    assert guard.stats_allowed(f"Bearer {CLUSTER_TOKEN}")
    assert not guard.stats_allowed("Bearer someone-else")
    assert not guard.stats_allowed(CLUSTER_TOKEN)  # not a bearer header
    no_hash = IngressGuard("ep-1", "http://unused/authorize", MODELS)
    assert not no_hash.stats_allowed(f"Bearer {CLUSTER_TOKEN}")
