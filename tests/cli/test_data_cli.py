"""raydeck data … against a real server process: connections, tables, preview, query, and
one-line errors; a secret given on stdin is never echoed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.cli.test_cli import assert_one_line_error, raydeck
from tests.ray_fixtures import LiveServer


def _with_stdin(env: dict[str, str], text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raydeck.cli.main", *args],
        env={**env, "COLUMNS": "200"},
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_data_commands(live_server: LiveServer, tmp_path: Path) -> None:
    env = live_server.client_env()
    path = tmp_path / "cli.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA shop")
    con.execute(
        "CREATE TABLE shop.items AS SELECT range AS id, 'i' || range AS name FROM range(42)"
    )
    con.close()
    created = raydeck(
        env, "data", "connections", "create", "cliwh", "-k", "duckdb", "--path", str(path)
    )
    assert created.returncode == 0, created.stderr
    listed = raydeck(env, "data", "connections", "list")
    assert "cliwh" in listed.stdout and "duckdb" in listed.stdout
    tables = raydeck(env, "data", "tables", "cliwh", "--dataset", "shop")
    assert tables.returncode == 0, tables.stderr
    assert "cliwh.shop.items" in tables.stdout and "42" in tables.stdout
    preview = raydeck(env, "data", "preview", "cliwh.shop.items", "-n", "2", "-o", "json")
    assert json.loads(preview.stdout)["rows"] == [[0, "i0"], [1, "i1"]]
    query = raydeck(env, "data", "query", "cliwh", "SELECT max(id) AS m FROM shop.items")
    assert query.returncode == 0 and "41" in query.stdout
    described = raydeck(env, "data", "describe", "cliwh.shop.items")
    assert "BIGINT" in described.stdout and "42 rows" in described.stdout


def test_secret_from_stdin_is_never_printed(live_server: LiveServer) -> None:
    env = live_server.client_env()
    url = "postgresql+psycopg://bob@127.0.0.1:1/db"
    created = _with_stdin(
        env,
        "hunter2-secret\n",
        "data",
        "connections",
        "create",
        "clipg",
        "-k",
        "sql",
        "--url",
        url,
        "--secret-stdin",
        "-o",
        "json",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["has_secret"] is True
    for args in (["connections", "list"], ["connections", "get", "clipg", "-o", "json"]):
        shown = raydeck(env, "data", *args)
        assert "hunter2-secret" not in shown.stdout + shown.stderr
    # a database that is not there is one line, and the password is not in it
    result = raydeck(env, "data", "tables", "clipg")
    assert_one_line_error(result, "unavailable", "clipg")
    assert "hunter2-secret" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["data", "tables", "ghost"], ["not_found", "ghost"]),
        (["data", "preview", "no-dots"], ["invalid_argument", "connection.dataset.table"]),
        (["data", "connections", "create", "x", "-k", "sql"], ["url", "required"]),
        (["data", "connections", "create", "x", "-k", "oracle"], ["oracle"]),
    ],
)
def test_data_errors_are_one_line(
    live_server: LiveServer, args: list[str], needles: list[str]
) -> None:
    assert_one_line_error(raydeck(live_server.client_env(), *args), *needles)
