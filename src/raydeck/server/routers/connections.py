"""/api/v1/connections: warehouse connections, their datasets and tables, read-only queries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile

from raydeck.core.models import Page
from raydeck.core.models.warehouse import (
    IDENTIFIER_PATTERN,
    Connection,
    ConnectionCreate,
    ConnectionKind,
    ConnectionUpdate,
    DatasetInfo,
    LoadFormat,
    QueryRequest,
    QueryResult,
    ResolvedConnection,
    TableInfo,
    TableRef,
    WriteMode,
    WriteResult,
)
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import connections as service

router = APIRouter(prefix="/api/v1/connections", tags=["connections"])

Table = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
Dataset = Annotated[
    str | None, Query(pattern=IDENTIFIER_PATTERN, description="default: the connection's")
]


@router.post("", status_code=201)
def create_connection(
    body: ConnectionCreate,
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.create"))],
) -> Connection:
    """Register a connection; a secret given here is encrypted and never returned."""
    return service.create_connection(session, state.settings, body, caller.project)


@router.get("")
def list_connections(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("connections.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    kind: Annotated[ConnectionKind | None, Query()] = None,
) -> Page[Connection]:
    return service.list_connections(
        session, page_size=page_size, page_token=page_token, project=caller.project, kind=kind
    )


@router.get("/{connection}")
def get_connection(
    connection: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("connections.get"))],
) -> Connection:
    return service.get_connection(session, connection, caller.project)


@router.patch("/{connection}")
def update_connection(
    connection: str,
    body: ConnectionUpdate,
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.update"))],
) -> Connection:
    return service.update_connection(session, state.settings, connection, body, caller.project)


@router.delete("/{connection}")
def delete_connection(
    connection: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("connections.delete"))],
) -> Connection:
    """Forget the connection; the warehouse's tables stay."""
    return service.delete_connection(session, connection, caller.project)


@router.post("/{connection}:resolve")
def resolve_connection(
    connection: str,
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.resolve"))],
) -> dict[str, object]:
    """The connection with its secret, for the SDK opening it on a cluster. Viewers may not."""
    resolved: ResolvedConnection = service.resolve_connection(
        session, state.settings, connection, caller.project
    )
    data = resolved.model_dump(mode="json")
    data["secret"] = resolved.secret.get_secret_value() if resolved.secret else None
    return data


@router.get("/{connection}/datasets")
def list_datasets(
    connection: str, state: State, caller: Annotated[Principal, Depends(require("connections.get"))]
) -> list[DatasetInfo]:
    return service.list_datasets(state.db, state.settings, connection, caller.project)


@router.get("/{connection}/tables")
def list_tables(
    connection: str,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.get"))],
    dataset: Dataset = None,
) -> list[TableInfo]:
    """Tables with columns and row counts."""
    return service.list_tables(state.db, state.settings, connection, dataset, caller.project)


@router.get("/{connection}/tables/{table}:preview")
def preview_table(
    connection: str,
    table: Table,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.get"))],
    dataset: Dataset = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> QueryResult:
    return service.preview_table(
        state.db, state.settings, connection, dataset, table, limit, caller.project
    )


@router.get("/{connection}/tables/{table}")
def get_table(
    connection: str,
    table: Table,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.get"))],
    dataset: Dataset = None,
) -> TableInfo:
    return service.table_info(state.db, state.settings, connection, dataset, table, caller.project)


@router.post("/{connection}:query")
def run_query(
    connection: str,
    body: QueryRequest,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.query"))],
) -> QueryResult:
    """One read-only statement (writes are refused); at most ``limit`` rows."""
    return service.query(state.db, state.settings, connection, body.sql, body.limit, caller.project)


@router.post("/{connection}/tables/{table}:load", status_code=201)
def load_table(
    connection: str,
    table: Table,
    state: State,
    caller: Annotated[Principal, Depends(require("connections.load"))],
    file: Annotated[UploadFile, File(description="a CSV (with header), Parquet or JSONL file")],
    mode: Annotated[WriteMode, Form()] = WriteMode.CREATE,
    file_format: Annotated[LoadFormat | None, Form(alias="format")] = None,
    dataset: Dataset = None,
) -> WriteResult:
    """Load an uploaded file into a table with the warehouse's staged write path: ``create``
    (refused when the table exists), ``append`` or ``overwrite``; all or nothing."""
    ref = str(TableRef(connection=connection, dataset=dataset, table=table))
    return service.load_table(
        state.db,
        state.settings,
        ref,
        file.file,
        filename=file.filename or "",
        file_format=file_format,
        mode=mode,
        project=caller.project,
    )
