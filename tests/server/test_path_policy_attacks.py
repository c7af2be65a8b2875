"""Issue 11, findings 2 and 7, against a real ``raydeck server`` process with no allowlists:
an account with only ``connections.*`` and ``models.upload`` in project ``alpha`` tries to
reach the server's own files, project ``beta``'s data and internal addresses. Every attempt
is a 4xx naming the field, and nothing is read, copied or fetched."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydeck.devtools import ServerProcess


@dataclass
class Attack:
    server: ServerProcess
    admin: httpx.Client
    alpha: httpx.Client  # mallory: connections.* and models.upload in project alpha only
    alpha_dir: Path  # alpha's own warehouse directory
    beta_file: Path  # a duckdb file of project beta, with a table in it


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    home = tmp_path_factory.mktemp("attacked-home")
    server = ServerProcess(home)
    server.env.pop("RAYDECK_ALLOWED_ROOTS", None)
    server.env.pop("RAYDECK_ALLOWED_PRIVATE_NETWORKS", None)
    server.start()
    admin = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
    )
    try:
        for project in ("alpha", "beta"):
            _ok(admin.post("/api/v1/projects", json={"name": project}))
        _ok(
            admin.post(
                "/api/v1/roles",
                json={"name": "data-only", "permissions": ["connections.*", "models.upload"]},
            )
        )
        _ok(admin.post("/api/v1/accounts", json={"name": "mallory"}))
        binding = {"account": "mallory", "role": "data-only", "project": "alpha"}
        _ok(admin.post("/api/v1/roleBindings", json=binding))
        secret = _ok(admin.post("/api/v1/tokens", json={"name": "m", "account": "mallory"}))
        alpha = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {secret['secret']}", "X-Raydeck-Project": "alpha"},
            timeout=120,  # the first browse imports Ray Data, the first upload the predictors
        )
        beta_conn = _ok(
            admin.post(
                "/api/v1/connections",
                json={"name": "bwh", "kind": "duckdb"},
                headers={"X-Raydeck-Project": "beta"},
            )
        )
        beta_file = Path(beta_conn["path"])
        beta_file.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(beta_file)) as con:
            con.execute("CREATE TABLE secrets AS SELECT 'beta-only' AS s")
        alpha_dir = home / "warehouse" / "projects" / "alpha"
        alpha_dir.mkdir(parents=True, exist_ok=True)
        yield Attack(server, admin, alpha, alpha_dir, beta_file)
    finally:
        server.stop()


def _refused(response: httpx.Response, field: str) -> str:
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    return str(error["message"])


def _create(attack: Attack, body: dict[str, Any]) -> httpx.Response:
    return attack.alpha.post("/api/v1/connections", json=body)


def _no_connections_stored(attack: Attack) -> None:
    listed = _ok(attack.alpha.get("/api/v1/connections"))
    assert [c["name"] for c in listed["items"] if c["name"].startswith("evil")] == []


def test_sqlite_url_of_the_servers_own_database_is_refused(attack: Attack) -> None:
    database = attack.server.home / "raydeck.db"
    assert database.is_file()
    for url in (
        f"sqlite:///{database}",
        f"sqlite:///{attack.alpha_dir}/../../../raydeck.db",  # '..' resolved first
        f"sqlite:///{attack.server.home}/secret.key",
    ):
        message = _refused(_create(attack, {"name": "evil", "kind": "sql", "url": url}), "url")
        assert "server's own files" in message
    # A symlink in alpha's own directory to the database: resolved before the check.
    (attack.alpha_dir / "innocent.db").symlink_to(database)
    url = f"sqlite:///{attack.alpha_dir / 'innocent.db'}"
    _refused(_create(attack, {"name": "evil", "kind": "sql", "url": url}), "url")
    _no_connections_stored(attack)


def test_duckdb_file_of_another_project_is_refused(attack: Attack) -> None:
    for path in (str(attack.beta_file), "../beta/bwh.duckdb"):
        response = _create(attack, {"name": "evil", "kind": "duckdb", "path": path})
        _refused(response, "path")
    _no_connections_stored(attack)


def test_files_root_of_the_whole_file_system_is_refused(attack: Attack) -> None:
    for root in ("/", "/etc", "file:///etc", str(attack.server.home), "memory://x"):
        response = _create(attack, {"name": "evil", "kind": "files", "root": root})
        _refused(response, "root")
    _no_connections_stored(attack)


def test_a_symlink_made_after_the_check_does_not_get_through(attack: Attack) -> None:
    """Created while harmless, then (as a job writing into the warehouse directory could)
    swapped for symlinks: every server-side open checks again."""
    lake = attack.alpha_dir / "lake"
    (lake / "raw").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), lake / "raw" / "ok.parquet")
    _ok(_create(attack, {"name": "lake", "kind": "files", "root": "lake"}))
    _ok(_create(attack, {"name": "mine", "kind": "duckdb", "path": "mine.duckdb"}))
    assert [d["name"] for d in _ok(attack.alpha.get("/api/v1/connections/lake/datasets"))] == [
        "raw"
    ]
    # A symlinked file inside a good root is skipped, not read.
    (lake / "raw" / "passwd.csv").symlink_to("/etc/passwd")
    (lake / "raw" / "db.parquet").symlink_to(attack.server.home / "raydeck.db")
    tables = _ok(attack.alpha.get("/api/v1/connections/lake/tables?dataset=raw"))
    assert [t["name"] for t in tables] == ["ok"]
    # The root itself swapped for a symlink to the server's home.
    shutil.rmtree(lake)
    lake.symlink_to(attack.server.home)
    _refused(attack.alpha.get("/api/v1/connections/lake/datasets"), "root")
    # The duckdb file swapped for a symlink to beta's warehouse file.
    mine = attack.alpha_dir / "mine.duckdb"
    mine.unlink(missing_ok=True)
    mine.symlink_to(attack.beta_file)
    response = attack.alpha.post("/api/v1/connections/mine:query", json={"sql": "SELECT 1"})
    _refused(response, "path")
    _refused(attack.alpha.get("/api/v1/connections/mine/tables"), "path")


def test_files_that_are_not_data_and_sqlite_files_are_4xx(attack: Attack) -> None:
    junk = attack.alpha_dir / "junk" / "raw"
    junk.mkdir(parents=True)
    (junk / "notes.parquet").write_text("not parquet at all")
    _ok(_create(attack, {"name": "junk", "kind": "files", "root": "junk"}))
    _refused(attack.alpha.get("/api/v1/connections/junk/tables?dataset=raw"), "table")
    _refused(attack.alpha.get("/api/v1/connections/junk/tables/notes:preview?dataset=raw"), "table")
    # A SQLite file opened as DuckDB: DuckDB would fetch its sqlite extension; sandboxed, no.
    with sqlite3.connect(attack.alpha_dir / "lite.db") as lite:
        lite.execute("CREATE TABLE t (a)")
    _ok(_create(attack, {"name": "lite", "kind": "duckdb", "path": "lite.db"}))
    message = _refused(attack.alpha.get("/api/v1/connections/lite/tables"), "path")
    assert "extension" in message.lower()


def test_artifact_uri_of_the_home_is_refused_and_nothing_copied(attack: Attack) -> None:
    home = attack.server.home
    for uri in (str(home), f"file://{home}/warehouse", "/etc", f"{attack.alpha_dir}/../.."):
        body = {"display_name": "evil", "framework": "sklearn", "artifact_uri": uri}
        _refused(attack.alpha.post("/api/v1/models", json=body), "artifact_uri")
    copied = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    assert copied == []


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            data = json.dumps({"internal": True}).encode()
            info = tarfile.TarInfo("model.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(archive.getvalue())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def internal_service() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Recorder,), {"hits": hits}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_internal_addresses_are_never_fetched(
    attack: Attack, internal_service: tuple[str, list[str]]
) -> None:
    address, hits = internal_service
    port = address.rsplit(":", 1)[1]
    for uri in (
        f"http://{address}/model.tar.gz",
        f"http://localhost:{port}/model.tar.gz",  # a name resolving to loopback
        f"http://[::ffff:127.0.0.1]:{port}/model.tar.gz",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://0.0.0.0/",
    ):
        body = {"display_name": "evil", "framework": "xgboost", "artifact_uri": uri}
        _refused(attack.alpha.post("/api/v1/models", json=body), "artifact_uri")
    for body, field in (
        ({"kind": "sql", "url": f"postgresql+psycopg://u@{address}/db"}, "url"),
        ({"kind": "sql", "url": "postgresql+psycopg://u@10.0.0.7/db"}, "url"),
        ({"kind": "sql", "url": "postgresql+psycopg://u@/db"}, "url"),  # local socket
        (
            {"kind": "bigquery", "project": "my-project", "api_endpoint": f"http://{address}"},
            "api_endpoint",
        ),
        (
            {
                "kind": "files",
                "root": "lake2",
                "secret": json.dumps({"client_kwargs": {"endpoint_url": f"http://{address}"}}),
            },
            "secret",
        ),
    ):
        _refused(_create(attack, {"name": "evil", **body}), field)
    assert hits == []
    _no_connections_stored(attack)


def test_ray_tokens_are_not_stored_in_clear(attack: Attack) -> None:
    """The database file the sqlite attack was after holds no usable Ray token."""
    with sqlite3.connect(attack.server.home / "raydeck.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(clusters)")]
    assert "ray_auth_token" not in columns and "ray_auth_token_encrypted" in columns
    assert oct(os.stat(attack.server.home / "secret.key").st_mode & 0o777) == "0o600"
