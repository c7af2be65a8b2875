"""raydeck data … against a real server process: connections, tables, preview, query, and
one-line errors; a secret given on stdin is never echoed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
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


def test_empty_secret_stdin_is_refused(live_server: LiveServer) -> None:
    url = "postgresql+psycopg://bob@127.0.0.1:1/db"
    args = ["data", "connections", "create", "nopw", "-k", "sql", "--url", url, "--secret-stdin"]
    result = _with_stdin(live_server.client_env(), "\n", *args)
    assert_one_line_error(result, "--secret-stdin", "empty")
    listed = raydeck(live_server.client_env(), "data", "connections", "list")
    assert "nopw" not in listed.stdout


def test_data_load_creates_appends_and_overwrites(live_server: LiveServer, tmp_path: Path) -> None:
    """Files into a warehouse table through the server: the format from the extension, rows
    staged and committed at once; a second create is refused and changes nothing."""
    env = live_server.client_env()
    assert raydeck(env, "data", "connections", "create", "loadwh", "-k", "duckdb").returncode == 0
    (tmp_path / "orders.csv").write_text("id,region,total\n1,eu,10.5\n2,us,3\n3,eu,7\n")
    loaded = raydeck(env, "data", "load", "loadwh.main.orders", str(tmp_path / "orders.csv"))
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 3 rows into loadwh.main.orders (create)" in loaded.stdout
    query = "SELECT region, sum(total) AS t FROM main.orders GROUP BY 1 ORDER BY 1"
    result = raydeck(env, "data", "query", "loadwh", query, "-o", "json")
    assert json.loads(result.stdout)["rows"] == [["eu", 17.5], ["us", 3.0]]

    again = raydeck(env, "data", "load", "loadwh.main.orders", str(tmp_path / "orders.csv"))
    assert_one_line_error(again, "already_exists", "orders")
    (tmp_path / "more.jsonl").write_text('{"id": 4, "region": "us", "total": 1.0}\n')
    appended = raydeck(
        env, "data", "load", "loadwh.main.orders", str(tmp_path / "more.jsonl"), "--mode", "append"
    )
    assert appended.returncode == 0, appended.stderr
    count = raydeck(
        env, "data", "query", "loadwh", "SELECT count(*) FROM main.orders", "-o", "json"
    )
    assert json.loads(count.stdout)["rows"] == [[4]]

    pq.write_table(pa.table({"id": [9], "region": ["ap"]}), tmp_path / "new.parquet")
    replaced = raydeck(
        env, "data", "load", "loadwh.main.orders", str(tmp_path / "new.parquet"),
        "--mode", "overwrite",
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    preview = raydeck(env, "data", "preview", "loadwh.main.orders", "-o", "json")
    assert json.loads(preview.stdout)["rows"] == [[9, "ap"]]

    (tmp_path / "notes.txt").write_text("hello\n")
    unknown = raydeck(env, "data", "load", "loadwh.main.t2", str(tmp_path / "notes.txt"))
    assert_one_line_error(unknown, "invalid_argument", "format")
    (tmp_path / "bad.parquet").write_text("not parquet")
    broken = raydeck(env, "data", "load", "loadwh.main.t2", str(tmp_path / "bad.parquet"))
    assert_one_line_error(broken, "invalid_argument", "parquet")


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
