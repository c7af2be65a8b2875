"""``ray.init("raydeck://<cluster>")``: lazy package hook, resolution, and a real connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from raydeck.core.settings import get_settings
from tests.raw_ray import RawHead, raw_head

SRC = str(Path(__file__).resolve().parents[2] / "src")


def clean_env() -> dict[str, str]:
    """This environment without any Ray auth settings: the builder must provide them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYDECK_"))}
    env["PYTHONPATH"] = SRC
    return env


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=clean_env(),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_import_raydeck_does_not_import_ray() -> None:
    done = run_python(
        "import sys, raydeck\n"
        "assert 'ray' not in sys.modules, 'ray imported eagerly'\n"
        "assert 'ClientBuilder' in dir(raydeck)\n"
        "from ray.client_builder import ClientBuilder\n"
        "assert issubclass(raydeck.ClientBuilder, ClientBuilder)\n"
        "print(raydeck.__version__)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0.1.0"


def test_builder_needs_a_cluster_name() -> None:
    from raydeck.client.ray_builder import RaydeckClientBuilder

    with pytest.raises(InvalidArgumentError):
        RaydeckClientBuilder("")


def test_builder_resolves_without_touching_ray_auth() -> None:
    from raydeck.client.ray_builder import RaydeckClientBuilder

    before = os.environ.get("RAY_AUTH_TOKEN")
    builder = RaydeckClientBuilder("dev/", resolve=lambda name: (f"{name}.host:10001", "s3cret"))
    assert builder.address == "dev.host:10001"
    assert builder.cluster_name == "dev"
    assert os.environ.get("RAY_AUTH_TOKEN") == before  # only connect() switches auth


class _FakeRaydeck(BaseHTTPRequestHandler):
    clusters: dict[str, dict[str, object]] = {
        "dev": {"name": "dev", "state": "RUNNING", "ray_client_address": "127.0.0.1:10001"},
        "new": {"name": "new", "state": "PROVISIONING", "ray_client_address": None},
    }
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        parts = self.path.strip("/").split("/")  # api v1 clusters <name> [credentials]
        cluster = self.clusters.get(parts[3]) if len(parts) >= 4 else None
        if cluster is None:
            status = 404
            body: dict[str, object] = {"error": {"code": "not_found", "message": "no cluster"}}
        elif parts[-1] == "credentials":
            status, body = 200, {"ray_auth_token": "ray-tok", **cluster}
        else:
            status, body = 200, cluster
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeRaydeck)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("RAYDECK_SERVER", url)
    monkeypatch.setenv("RAYDECK_TOKEN", "rd-token")
    monkeypatch.setenv("RAYDECK_HOME", str(tmp_path))
    get_settings.cache_clear()
    _FakeRaydeck.seen.clear()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        get_settings.cache_clear()


def test_resolve_cluster_asks_the_server(fake_server: str) -> None:
    from raydeck.client.ray_builder import resolve_cluster

    assert resolve_cluster("dev") == ("127.0.0.1:10001", "ray-tok")
    assert _FakeRaydeck.seen == [
        ("/api/v1/clusters/dev", "Bearer rd-token"),
        ("/api/v1/clusters/dev/credentials", "Bearer rd-token"),
    ]
    with pytest.raises(FailedPreconditionError, match="PROVISIONING"):
        resolve_cluster("new")
    with pytest.raises(NotFoundError):
        resolve_cluster("nope")


# -- live: ray.init("raydeck://...") against a raw token-auth cluster -------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RawHead]:
    with raw_head(resources={"rdk_accel": 2}) as head:
        yield head


DRIVER = """
import json, os, sys
import ray
import raydeck.client.ray_builder as ray_builder

address, token = sys.argv[1], sys.argv[2]
asked = []

def fake_resolve(name):
    asked.append(name)
    return address, token

ray_builder.resolve_cluster = fake_resolve
ray.init("raydeck://mycluster")

@ray.remote(num_cpus=0, resources={"rdk_accel": 1})
def times_six(x):
    return x * 6

value = ray.get(times_six.remote(7))
ray.shutdown()
print(json.dumps({"value": value, "asked": asked, "mode": os.environ["RAY_AUTH_MODE"]}))
"""


@pytest.mark.ray
def test_ray_init_raydeck_scheme_runs_a_task(ray_cluster: RawHead) -> None:
    # A subprocess: Ray Client state and Ray's auth config are process-wide.
    done = run_python(DRIVER, ray_cluster.ray_client_address, ray_cluster.token, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"value": 42, "asked": ["mycluster"], "mode": "token"}
