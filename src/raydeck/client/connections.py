"""``RaydeckClient.connections``: the warehouse connection registry and table browsing.

rd.connections.create(ConnectionCreate(name="wh", kind="duckdb"))
rd.connections.tables("wh", "main")               # schemas and row counts
rd.connections.preview("wh.main.orders", limit=20)
rd.connections.query("wh", "SELECT count(*) FROM main.orders")
rd.connections.load_table("wh.main.orders", "orders.csv", mode="create")
"""

from __future__ import annotations

import builtins
from pathlib import Path
from urllib.parse import quote

import httpx

from raydeck.client.http import ApiTransport, raise_for_error
from raydeck.core.errors import UnavailableError
from raydeck.core.models import Page
from raydeck.core.models.warehouse import (
    Connection,
    ConnectionCreate,
    ConnectionUpdate,
    DatasetInfo,
    QueryRequest,
    QueryResult,
    ResolvedConnection,
    TableInfo,
    TableRef,
    WriteMode,
    WriteResult,
)

__all__ = ["ConnectionApi"]

_PATH = "/api/v1/connections"


def _dump(model: ConnectionCreate | ConnectionUpdate) -> dict[str, object]:
    data = model.model_dump(mode="json", exclude_none=True)
    if model.secret is not None:  # model_dump masks SecretStr; the server needs the value
        data["secret"] = model.secret.get_secret_value()
    return data


class ConnectionApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create(self, request: ConnectionCreate) -> Connection:
        return Connection.model_validate(self._api.request("POST", _PATH, json=_dump(request)))

    def get(self, name: str) -> Connection:
        return Connection.model_validate(self._api.request("GET", f"{_PATH}/{quote(name)}"))

    def list(
        self, *, kind: str | None = None, page_size: int = 100, page_token: str | None = None
    ) -> Page[Connection]:
        params = {"kind": kind, "page_size": page_size, "page_token": page_token}
        return Page[Connection].model_validate(self._api.request("GET", _PATH, params=params))

    def update(self, name: str, request: ConnectionUpdate) -> Connection:
        data = self._api.request("PATCH", f"{_PATH}/{quote(name)}", json=_dump(request))
        return Connection.model_validate(data)

    def delete(self, name: str) -> Connection:
        return Connection.model_validate(self._api.request("DELETE", f"{_PATH}/{quote(name)}"))

    def resolve(self, name: str) -> ResolvedConnection:
        """The connection with its secret, for code that opens it (Ray Data tasks)."""
        data = self._api.request("POST", f"{_PATH}/{quote(name)}:resolve")
        return ResolvedConnection.model_validate(data)

    def datasets(self, name: str) -> builtins.list[DatasetInfo]:
        data = self._api.request("GET", f"{_PATH}/{quote(name)}/datasets")
        return [DatasetInfo.model_validate(d) for d in data]

    def tables(self, name: str, dataset: str | None = None) -> builtins.list[TableInfo]:
        """Tables of ``dataset`` (default: the connection's default dataset)."""
        params = {"dataset": dataset}
        data = self._api.request("GET", f"{_PATH}/{quote(name)}/tables", params=params)
        return [TableInfo.model_validate(t) for t in data]

    def table(self, ref: str) -> TableInfo:
        parsed = TableRef.parse(ref)
        path = f"{_PATH}/{quote(parsed.connection)}/tables/{quote(parsed.table)}"
        data = self._api.request("GET", path, params={"dataset": parsed.dataset})
        return TableInfo.model_validate(data)

    def preview(self, ref: str, *, limit: int = 20) -> QueryResult:
        parsed = TableRef.parse(ref)
        path = f"{_PATH}/{quote(parsed.connection)}/tables/{quote(parsed.table)}:preview"
        data = self._api.request("GET", path, params={"dataset": parsed.dataset, "limit": limit})
        return QueryResult.model_validate(data)

    def query(self, name: str, sql: str, *, limit: int = 100) -> QueryResult:
        """Run one read-only statement in the warehouse; at most ``limit`` rows come back."""
        body = QueryRequest(sql=sql, limit=limit).model_dump(mode="json")
        data = self._api.request("POST", f"{_PATH}/{quote(name)}:query", json=body)
        return QueryResult.model_validate(data)

    def load_table(
        self,
        ref: str,
        file: str | Path,
        *,
        mode: WriteMode | str = WriteMode.CREATE,
        format: str | None = None,
    ) -> WriteResult:
        """Upload a CSV (with a header row), Parquet or JSONL file into ``conn.dataset.table``
        with the warehouse's staged write path: ``create`` (refused when the table exists),
        ``append`` or ``overwrite``. The format defaults to the file's extension."""
        parsed = TableRef.parse(ref)
        source = Path(file)
        path = f"{_PATH}/{quote(parsed.connection)}/tables/{quote(parsed.table)}:load"
        form = {"mode": str(WriteMode(mode))}
        if format is not None:
            form["format"] = format
        params = {"dataset": parsed.dataset} if parsed.dataset else None
        try:
            with source.open("rb") as handle:
                response = self._api.http.post(
                    path,
                    params=params,
                    data=form,
                    files={"file": (source.name, handle, "application/octet-stream")},
                    timeout=httpx.Timeout(30.0, read=900.0, write=900.0),
                )
        except httpx.HTTPError as exc:
            raise UnavailableError(
                f"cannot reach Raydeck server at {self._api.server}: {exc}"
            ) from exc
        raise_for_error(response)
        return WriteResult.model_validate(response.json())
