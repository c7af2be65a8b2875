"""A wire-level FAKE of the BigQuery REST API v2 — not BigQuery.

A real local HTTP server (a thread) that answers the REST resources ``raydeck.data``'s
``bigquery`` kind uses, with the JSON shapes BigQuery documents and returns (as recorded
from the API reference: datasets.list/get, tables.list/get/insert/delete,
tabledata.list/insertAll, jobs.insert/get, jobs.query, jobs.getQueryResults). The unmodified
``google-cloud-bigquery`` client talks to it over HTTP through ``client_options=
{"api_endpoint": fake.url}`` with anonymous credentials.

Datasets and tables live in an in-memory DuckDB (one schema per dataset), which also runs
the SQL of query jobs after backtick identifiers (`project.dataset.table`) are rewritten;
so SQL outside the common subset of BigQuery and DuckDB does not behave like BigQuery here.
Errors come back as BigQuery's error objects (``notFound``, ``duplicate``, ``invalidQuery``)
so the client raises its usual exceptions. The Storage API (gRPC) is not served.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import duckdb
import pyarrow as pa

__all__ = ["FakeBigQuery", "running_fake_bigquery"]

_BQ_TO_DUCK = {
    "INTEGER": "BIGINT",
    "INT64": "BIGINT",
    "FLOAT": "DOUBLE",
    "FLOAT64": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "STRING": "VARCHAR",
    "BYTES": "BLOB",
    "DATE": "DATE",
    "DATETIME": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMPTZ",
    "TIME": "TIME",
    "NUMERIC": "DECIMAL(38,9)",
    "BIGNUMERIC": "DECIMAL(38,18)",
}


def _bq_type(duck_type: str) -> str:
    t = duck_type.upper()
    if t in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER"):
        return "INTEGER"
    if t in ("DOUBLE", "FLOAT", "REAL"):
        return "FLOAT"
    if t == "BOOLEAN":
        return "BOOLEAN"
    if t == "BLOB":
        return "BYTES"
    if t == "DATE":
        return "DATE"
    if t == "TIMESTAMP WITH TIME ZONE":
        return "TIMESTAMP"
    if t.startswith("TIMESTAMP"):
        return "DATETIME"
    if t == "TIME":
        return "TIME"
    if t.startswith("DECIMAL"):
        return "NUMERIC"
    return "STRING"


def _cell(value: Any, micros: bool) -> Any:
    """A value as tabledata.list / getQueryResults encode it: strings, or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat()  # DATETIME
        seconds = value.timestamp()
        return str(round(seconds * 1_000_000)) if micros else repr(seconds)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


class _HttpError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def _reason(exc: duckdb.Error) -> tuple[int, str]:
    text = str(exc)
    if "already exists" in text:
        return 409, "duplicate"
    if "does not exist" in text:
        return 404, "notFound"
    return 400, "invalidQuery"


class FakeBigQuery:
    """In-memory BigQuery projects behind a real HTTP server; ``url`` is its API root."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.db = duckdb.connect(":memory:")
        for alias, real in (("FLOAT64", "DOUBLE"), ("BYTES", "BLOB")):
            self.db.execute(f"CREATE TYPE {alias} AS {real}")
        self.db.execute("CREATE TYPE BIGNUMERIC AS DECIMAL(38,18)")
        self.db.execute('CREATE SCHEMA "_anon"')  # hidden dataset of query results
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.insert_ids: dict[str, set[str]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query) in arrival order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Test set-up and inspection (straight into the store, not over the API) ---------------

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.db.execute(self._translate(statement)).fetchall()

    def create_dataset(self, dataset: str) -> None:
        self.sql(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')

    def tables(self, dataset: str) -> list[str]:
        return [
            r[0]
            for r in self.sql(
                "SELECT table_name FROM information_schema.tables "
                f"WHERE table_schema = '{dataset}' ORDER BY table_name"
            )
        ]

    # Store ------------------------------------------------------------------------------------

    def _translate(self, sql: str) -> str:
        def ident(match: re.Match[str]) -> str:
            parts = match.group(1).split(".")
            if len(parts) == 3:
                parts = parts[1:]  # the project: one store per fake
            return ".".join(f'"{p}"' for p in parts)

        return re.sub(r"`([^`]*)`", ident, sql)

    def _columns(self, dataset: str, table: str) -> list[tuple[str, str, bool]]:
        rows = self.db.execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        if not rows:
            raise _HttpError(404, "notFound", f"Not found: Table {self.project}:{dataset}.{table}")
        return [(str(n), str(t), bool(nullable)) for n, t, nullable in rows]

    def _require_dataset(self, dataset: str) -> None:
        found = self.db.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = ?", [dataset]
        ).fetchall()
        if not found:
            raise _HttpError(404, "notFound", f"Not found: Dataset {self.project}:{dataset}")

    def _schema(self, dataset: str, table: str) -> dict[str, Any]:
        return {
            "fields": [
                {"name": n, "type": _bq_type(t), "mode": "NULLABLE" if nullable else "REQUIRED"}
                for n, t, nullable in self._columns(dataset, table)
            ]
        }

    def _table_resource(self, dataset: str, table: str) -> dict[str, Any]:
        schema = self._schema(dataset, table)
        count = self.db.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchall()[0][0]
        return {
            "kind": "bigquery#table",
            "etag": uuid.uuid4().hex[:16],
            "id": f"{self.project}:{dataset}.{table}",
            "selfLink": f"{self.url}/bigquery/v2/projects/{self.project}/datasets/{dataset}"
            f"/tables/{table}",
            "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table},
            "schema": schema,
            "numRows": str(count),
            "numBytes": "0",
            "type": "TABLE",
            "location": "US",
            "creationTime": str(int(time.time() * 1000)),
        }

    def _rows(
        self,
        relation: str,
        dataset: str,
        table: str,
        params: dict[str, str],
    ) -> dict[str, Any]:
        """One page of rows: ``startIndex`` or a ``pageToken`` (our offset), ``maxResults``."""
        columns = self._columns(dataset, table)
        wanted = params.get("selectedFields")
        names = [c[0] for c in columns]
        if wanted:
            names = [n for n in wanted.split(",") if n in names]
        total = self.db.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
        start = int(params.get("pageToken") or params.get("startIndex") or 0)
        page = min(int(params.get("maxResults") or 100_000), 100_000)
        listed = ", ".join(f'"{n}"' for n in names) or "NULL"
        rows = self.db.execute(
            f"SELECT {listed} FROM {relation} ORDER BY rowid LIMIT {page} OFFSET {start}"
        ).fetchall()
        micros = params.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        body: dict[str, Any] = {
            "totalRows": str(total),
            "rows": [{"f": [{"v": _cell(v, micros)} for v in row]} for row in rows],
        }
        if start + len(rows) < total and rows:
            body["pageToken"] = str(start + len(rows))
        return body

    # Jobs ---------------------------------------------------------------------------------------

    def _run_query(self, job_id: str, sql: str, location: str) -> dict[str, Any]:
        head = sql.lstrip("( \n\t").split(None, 1)[0].upper() if sql.strip() else ""
        statement = {
            "SELECT": "SELECT",
            "WITH": "SELECT",
            "INSERT": "INSERT",
            "DELETE": "DELETE",
            "UPDATE": "UPDATE",
            "DROP": "DROP_TABLE",
        }.get(head, "CREATE_TABLE_AS_SELECT" if head == "CREATE" else head)
        now = str(int(time.time() * 1000))
        job: dict[str, Any] = {
            "kind": "bigquery#job",
            "etag": uuid.uuid4().hex[:16],
            "id": f"{self.project}:{location}.{job_id}",
            "jobReference": {"projectId": self.project, "jobId": job_id, "location": location},
            "configuration": {"jobType": "QUERY", "query": {"query": sql, "useLegacySql": False}},
            "status": {"state": "DONE"},
            "statistics": {
                "creationTime": now,
                "startTime": now,
                "endTime": now,
                "query": {"statementType": statement, "totalBytesProcessed": "0"},
            },
        }
        translated = self._translate(sql)
        try:
            if statement == "SELECT":
                anon = f"anon_{job_id.replace('-', '_')}"
                self.db.execute(f'CREATE TABLE "_anon"."{anon}" AS {translated}')
                job["configuration"]["query"]["destinationTable"] = {
                    "projectId": self.project,
                    "datasetId": "_anon",
                    "tableId": anon,
                }
            else:
                self.db.execute("BEGIN TRANSACTION")  # one statement, atomic like BigQuery's
                try:
                    self.db.execute(translated)
                    self.db.execute("COMMIT")
                except duckdb.Error:
                    self.db.execute("ROLLBACK")
                    raise
        except duckdb.Error as exc:
            _, reason = _reason(exc)
            error = {"reason": reason, "location": "query", "message": str(exc).splitlines()[0]}
            job["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
        self.jobs[job_id] = job
        return job

    def _query_results(self, job: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        error = job["status"].get("errorResult")
        if error is not None:
            code = {"notFound": 404, "duplicate": 409}.get(error["reason"], 400)
            raise _HttpError(code, error["reason"], error["message"])
        body: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "etag": uuid.uuid4().hex[:16],
            "jobReference": job["jobReference"],
            "jobComplete": True,
            "cacheHit": False,
            "totalBytesProcessed": "0",
        }
        destination = job["configuration"]["query"].get("destinationTable")
        if destination is None:
            return {**body, "totalRows": "0"}
        dataset, table = destination["datasetId"], destination["tableId"]
        body["schema"] = self._schema(dataset, table)
        body.update(self._rows(f'"{dataset}"."{table}"', dataset, table, params))
        return body

    # HTTP -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Any:
        parts = path.removeprefix("/bigquery/v2").strip("/").split("/")
        if len(parts) < 2 or parts[0] != "projects" or parts[1] != self.project:
            raise _HttpError(404, "notFound", f"Not found: {path}")
        rest = parts[2:]
        match method, rest:
            case "GET", ["datasets"]:
                names = self.db.execute(
                    "SELECT schema_name FROM information_schema.schemata "
                    "WHERE catalog_name = current_database() ORDER BY schema_name"
                ).fetchall()
                return {
                    "kind": "bigquery#datasetList",
                    "etag": uuid.uuid4().hex[:16],
                    "datasets": [
                        {
                            "kind": "bigquery#dataset",
                            "id": f"{self.project}:{n}",
                            "datasetReference": {"projectId": self.project, "datasetId": n},
                            "location": "US",
                        }
                        for (n,) in names
                        if not n.startswith("_")
                        and n not in ("main", "information_schema")
                        and n != "pg_catalog"
                    ],
                }
            case "GET", ["datasets", dataset]:
                self._require_dataset(dataset)
                return {
                    "kind": "bigquery#dataset",
                    "id": f"{self.project}:{dataset}",
                    "datasetReference": {"projectId": self.project, "datasetId": dataset},
                    "location": "US",
                }
            case "GET", ["datasets", dataset, "tables"]:
                self._require_dataset(dataset)
                tables = self.tables(dataset)
                return {
                    "kind": "bigquery#tableList",
                    "etag": uuid.uuid4().hex[:16],
                    "tables": [
                        {
                            "kind": "bigquery#table",
                            "id": f"{self.project}:{dataset}.{t}",
                            "tableReference": {
                                "projectId": self.project,
                                "datasetId": dataset,
                                "tableId": t,
                            },
                            "type": "TABLE",
                        }
                        for t in tables
                    ],
                    "totalItems": len(tables),
                }
            case "POST", ["datasets", dataset, "tables"]:
                self._require_dataset(dataset)
                table = body["tableReference"]["tableId"]
                columns = ", ".join(
                    f'"{f["name"]}" {_BQ_TO_DUCK[f.get("type", "STRING").upper()]}'
                    + (" NOT NULL" if f.get("mode") == "REQUIRED" else "")
                    for f in body.get("schema", {}).get("fields", [])
                )
                try:
                    self.db.execute(f'CREATE TABLE "{dataset}"."{table}" ({columns})')
                except duckdb.Error as exc:
                    code, reason = _reason(exc)
                    raise _HttpError(
                        code, reason, f"Already Exists: Table {self.project}:{dataset}.{table}"
                    ) from exc
                return self._table_resource(dataset, table)
            case "GET", ["datasets", dataset, "tables", table]:
                return self._table_resource(dataset, table)
            case "DELETE", ["datasets", dataset, "tables", table]:
                self._columns(dataset, table)
                self.db.execute(f'DROP TABLE "{dataset}"."{table}"')
                return None
            case "GET", ["datasets", dataset, "tables", table, "data"]:
                page = self._rows(f'"{dataset}"."{table}"', dataset, table, params)
                return {"kind": "bigquery#tableDataList", "etag": uuid.uuid4().hex[:16], **page}
            case "POST", ["datasets", dataset, "tables", table, "insertAll"]:
                return self._insert_all(dataset, table, body)
            case "POST", ["jobs"]:
                reference = body.get("jobReference", {})
                job_id = reference.get("jobId") or uuid.uuid4().hex
                if job_id in self.jobs:
                    raise _HttpError(409, "duplicate", f"Already Exists: Job {job_id}")
                query = body.get("configuration", {}).get("query", {}).get("query")
                if query is None:
                    raise _HttpError(400, "invalid", "only query jobs are served by this fake")
                return self._run_query(job_id, query, reference.get("location") or "US")
            case "GET", ["jobs", job_id]:
                if job_id not in self.jobs:
                    raise _HttpError(404, "notFound", f"Not found: Job {job_id}")
                return self.jobs[job_id]
            case "GET", ["queries", job_id]:
                if job_id not in self.jobs:
                    raise _HttpError(404, "notFound", f"Not found: Job {job_id}")
                return self._query_results(self.jobs[job_id], params)
            case "POST", ["queries"]:
                job_id = body.get("requestId") or uuid.uuid4().hex
                job = self._run_query(job_id, body["query"], body.get("location") or "US")
                page = {"maxResults": str(body.get("maxResults") or 100_000)}
                result = self._query_results(job, page)
                return {**result, "kind": "bigquery#queryResponse", "queryId": job_id}
        raise _HttpError(404, "notFound", f"Not found: {method} {path}")

    def _insert_all(self, dataset: str, table: str, body: dict[str, Any]) -> dict[str, Any]:
        columns = self._columns(dataset, table)
        names = [c[0] for c in columns]
        seen = self.insert_ids.setdefault(f"{dataset}.{table}", set())
        rows: list[dict[str, Any]] = []
        errors = []
        for index, row in enumerate(body.get("rows", [])):
            values = row.get("json", {})
            unknown = [k for k in values if k not in names]
            if unknown:
                errors.append(
                    {
                        "index": index,
                        "errors": [
                            {
                                "reason": "invalid",
                                "location": unknown[0],
                                "debugInfo": "",
                                "message": f"no such field: {unknown[0]}.",
                            }
                        ],
                    }
                )
                continue
            insert_id = row.get("insertId")
            if insert_id is not None and insert_id in seen:
                continue  # a retried request: BigQuery de-duplicates by insertId
            rows.append({n: values.get(n) for n in names})
        if errors:
            return {"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}
        if rows:
            arrow = pa.Table.from_pylist(rows)
            try:
                self.db.register("_incoming", arrow)
                self.db.execute(
                    f'INSERT INTO "{dataset}"."{table}" BY NAME SELECT * FROM _incoming'
                )
            except duckdb.Error as exc:
                message = str(exc).splitlines()[0]
                return {
                    "kind": "bigquery#tableDataInsertAllResponse",
                    "insertErrors": [
                        {"index": 0, "errors": [{"reason": "invalid", "message": message}]}
                    ],
                }
            finally:
                self.db.unregister("_incoming")
            seen.update(r["insertId"] for r in body["rows"] if r.get("insertId"))
        return {"kind": "bigquery#tableDataInsertAllResponse"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                parsed = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append((method, self.path))
                try:
                    body = json.loads(raw) if raw else {}
                    with fake.lock:
                        answer = fake.handle(method, parsed.path, params, body)
                    status = 204 if answer is None else 200
                    payload = b"" if answer is None else json.dumps(answer).encode()
                except _HttpError as exc:
                    status = exc.code
                    payload = json.dumps(
                        {
                            "error": {
                                "code": exc.code,
                                "message": exc.message,
                                "errors": [
                                    {
                                        "message": exc.message,
                                        "domain": "global",
                                        "reason": exc.reason,
                                    }
                                ],
                                "status": _STATUS.get(exc.code, "UNKNOWN"),
                            }
                        }
                    ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler


@contextmanager
def running_fake_bigquery(project: str) -> Iterator[FakeBigQuery]:
    fake = FakeBigQuery(project)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
