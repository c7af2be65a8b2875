"""uri_policy: the rules behind the attack tests, case by case (no server needed), and the
pinned fetch against a local HTTP server."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.warehouse import ConnectionKind, ResolvedConnection
from raydeck.core.settings import Settings
from raydeck.server.services.uri_policy import (
    check_connection,
    check_host,
    check_local_path,
    check_location,
    fetch_url,
    project_warehouse_dir,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=None)


def _refused(call: object, field: str) -> str:
    assert callable(call)
    with pytest.raises(InvalidArgumentError) as raised:
        call()
    assert raised.value.field == field
    return raised.value.message


def test_each_project_has_its_own_directory_and_default_cannot_reach_the_others(
    settings: Settings,
) -> None:
    default_dir = project_warehouse_dir(settings, "default")
    team_dir = project_warehouse_dir(settings, "team")
    assert default_dir == settings.warehouse_root and team_dir.parent.parent == default_dir
    assert check_local_path(settings, "default", str(default_dir / "a.duckdb"), field="path")
    assert check_local_path(settings, "team", str(team_dir / "sub" / "x"), field="path")
    for path in (team_dir / "x.duckdb", default_dir / "projects", default_dir):
        _refused(lambda p=path: check_local_path(settings, "default", str(p), field="path"), "path")
    _refused(lambda: check_local_path(settings, "team", str(default_dir / "a"), field="p"), "p")
    _refused(lambda: check_local_path(settings, "team", "relative", field="p"), "p")


def test_allowlisted_roots_never_open_the_home(settings: Settings, tmp_path: Path) -> None:
    settings.allowed_roots = f"{tmp_path}, s3://team-bucket/raydeck"
    assert check_location(settings, "t", str(tmp_path / "data" / "x.csv"), field="f")
    assert check_location(settings, "t", "s3://team-bucket/raydeck/in/", field="f")
    for uri in (
        str(tmp_path),  # holds the home
        str(settings.home / "credentials"),
        "s3://team-bucket/raydeckother",  # a prefix match on the path boundary only
        "s3://other-bucket/x",
        "gs://team-bucket/raydeck",
        "/etc/passwd",
    ):
        _refused(lambda u=uri: check_location(settings, "t", u, field="f"), "f")
    # A key file or database moved outside the home stays refused even when allowlisted.
    settings.secret_key_file = tmp_path / "keys" / "secret.key"
    _refused(lambda: check_location(settings, "t", str(tmp_path / "keys"), field="f"), "f")


def test_symlinks_and_dotdot_are_resolved_before_the_check(
    settings: Settings, tmp_path: Path
) -> None:
    own = project_warehouse_dir(settings, "t")
    own.mkdir(parents=True)
    (own / "escape").symlink_to(tmp_path)
    assert check_local_path(settings, "t", str(own / "inside" / ".." / "x"), field="f") == own / "x"
    _refused(lambda: check_local_path(settings, "t", str(own / "escape" / "f"), field="f"), "f")
    _refused(lambda: check_local_path(settings, "t", f"{own}/../../../x", field="f"), "f")


def test_private_addresses_need_the_admin_setting(settings: Settings) -> None:
    for host in ("127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254", "::1", "0.0.0.0"):
        message = _refused(lambda h=host: check_host(settings, h, None, field="url"), "url")
        assert "RAYDECK_ALLOWED_PRIVATE_NETWORKS" in message
    assert check_host(settings, "8.8.8.8", 53, field="url") == "8.8.8.8"
    settings.allowed_private_networks = "10.0.0.0/8, localhost"
    assert check_host(settings, "10.1.2.3", None, field="url") == "10.1.2.3"
    assert check_host(settings, "localhost", None, field="url") in ("127.0.0.1", "::1")
    _refused(lambda: check_host(settings, "127.0.0.1", None, field="url"), "url")
    settings.allowed_private_networks = "*"
    assert check_host(settings, "169.254.169.254", None, field="url")
    # A name this server cannot resolve: refused when opening, let through when storing.
    _refused(lambda: check_host(settings, "db.invalid", None, field="url"), "url")
    assert check_host(settings, "db.invalid", None, field="url", must_resolve=False) == ""


def test_sql_urls_are_pinned_and_the_control_planes_database_refused(
    settings: Settings,
) -> None:
    settings.allowed_private_networks = "127.0.0.0/8"
    pg = ResolvedConnection(
        name="pg", kind=ConnectionKind.SQL, url="postgresql+psycopg://u@localhost:5432/db"
    )
    pinned = check_connection(settings, "t", pg)
    assert pinned.url is not None and "hostaddr=127.0.0.1" in pinned.url
    settings.database_url = "postgresql+psycopg://raydeck@127.0.0.1:5432/raydeck"
    own_db = pg.model_copy(update={"url": "postgresql+psycopg://x@127.0.0.1/raydeck"})
    assert "own database" in _refused(lambda: check_connection(settings, "t", own_db), "url")
    lite = pg.model_copy(update={"url": "sqlite:///file:x?mode=ro&uri=true"})
    _refused(lambda: check_connection(settings, "t", lite), "url")


class _Site(BaseHTTPRequestHandler):
    hosts: list[str]

    def do_GET(self) -> None:
        self.hosts.append(self.headers["Host"])
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/x")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"payload")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[int, list[str]]]:
    hosts: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("S", (_Site,), {"hosts": hosts}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hosts
    server.shutdown()
    server.server_close()


def test_fetch_goes_to_the_checked_address_and_checks_redirects(
    settings: Settings, site: tuple[int, list[str]]
) -> None:
    port, hosts = site
    settings.allowed_private_networks = "localhost"  # the name only, not 127.0.0.1 itself
    out = io.BytesIO()
    fetch_url(settings, f"http://localhost:{port}/a.tgz", out, field="artifact_uri")
    assert out.getvalue() == b"payload" and hosts == [f"localhost:{port}"]
    # The redirect names 127.0.0.1, which is not allowed: not followed.
    message = _refused(
        lambda: fetch_url(settings, f"http://localhost:{port}/hop", io.BytesIO(), field="u"), "u"
    )
    assert "loopback" in message and hosts == [f"localhost:{port}"] * 2
    too_big = io.BytesIO()
    _refused(
        lambda: fetch_url(settings, f"http://localhost:{port}/a", too_big, field="u", max_bytes=3),
        "u",
    )
