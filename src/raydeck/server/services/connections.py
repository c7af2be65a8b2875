"""Warehouse connections: the registry (CRUD, secrets encrypted at rest) and browsing.

Browsing (datasets, tables, previews, read-only queries) opens the warehouse from the
server process; a session is held only while the connection row is read, never while the
warehouse answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import Session

from raydeck.core.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from raydeck.core.ids import new_id
from raydeck.core.models import Page
from raydeck.core.models.warehouse import (
    Connection,
    ConnectionCreate,
    ConnectionKind,
    ConnectionUpdate,
    DatasetInfo,
    FileFormat,
    QueryResult,
    ResolvedConnection,
    TableInfo,
    TableRef,
)
from raydeck.core.settings import Settings
from raydeck.db.models import ConnectionRow
from raydeck.db.session import Database
from raydeck.server.secret_box import secret_box
from raydeck.server.services.paging import fetch_page
from raydeck.server.services.uri_policy import check_connection, project_warehouse_dir

if TYPE_CHECKING:
    from raydeck.data.base import Warehouse

__all__ = [
    "create_connection",
    "delete_connection",
    "find_table",
    "get_connection",
    "list_connections",
    "list_datasets",
    "list_tables",
    "preview_table",
    "query",
    "resolve_connection",
    "secret_box",
    "table_info",
    "update_connection",
]

_CONFIG_FIELDS = (
    "path",
    "url",
    "root",
    "format",
    "project",
    "dataset",
    "api_endpoint",
    "secret_env",
)


def to_model(row: ConnectionRow) -> Connection:
    return Connection(
        id=row.id,
        name=row.name,
        kind=ConnectionKind(row.kind),
        description=row.description,
        labels=dict(row.labels),
        has_secret=row.secret_ciphertext is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        **{k: row.config.get(k) for k in _CONFIG_FIELDS},
    )


def get_connection_row(session: Session, ref: str, project: str) -> ConnectionRow:
    """By name or id, within ``project`` (another project's connection is not found)."""
    row = session.scalar(
        select(ConnectionRow).where(ConnectionRow.project == project, ConnectionRow.name == ref)
    ) or session.get(ConnectionRow, ref)
    if row is None or row.project != project:
        raise NotFoundError(f"connection {ref!r} not found", field="connection")
    return row


def get_connection(session: Session, ref: str, project: str) -> Connection:
    return to_model(get_connection_row(session, ref, project))


def _sql_url(url: str, secret: str | None) -> tuple[str, str | None]:
    """The URL without its password (stored in the clear) and the secret to encrypt."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, ValueError) as exc:
        raise InvalidArgumentError(f"url is not a SQLAlchemy URL: {exc}", field="url") from exc
    except NoSuchModuleError as exc:
        raise InvalidArgumentError(
            f"url names a database driver that is not installed: {parsed.drivername}", field="url"
        ) from exc
    if parsed.password is not None:
        if secret is not None:
            raise InvalidArgumentError(
                "the password is both in url and in secret; give it once", field="secret"
            )
        secret = str(parsed.password)
        parsed = URL.create(  # URL.set(password=None) would keep the password
            parsed.drivername,
            username=parsed.username,
            host=parsed.host,
            port=parsed.port,
            database=parsed.database,
            query=parsed.query,
        )
    return parsed.render_as_string(hide_password=False), secret


def _config(
    settings: Settings, request: ConnectionCreate, project: str
) -> tuple[dict[str, Any], str | None]:
    secret = request.secret.get_secret_value() if request.secret is not None else None
    config: dict[str, Any] = {"secret_env": request.secret_env}
    own = project_warehouse_dir(settings, project)  # relative paths and roots go there
    if request.kind is ConnectionKind.DUCKDB:
        path = Path(request.path) if request.path else Path(f"{request.name}.duckdb")
        config["path"] = str(path if path.is_absolute() else own / path)
    elif request.kind is ConnectionKind.SQL:
        assert request.url is not None  # the model requires it for this kind
        config["url"], secret = _sql_url(request.url, secret)
    elif request.kind is ConnectionKind.FILES:
        assert request.root is not None
        root = request.root
        if "://" not in root and not Path(root).is_absolute():
            root = str(own / root)
        config["root"] = root.rstrip("/") or "/"
        config["format"] = (request.format or FileFormat.PARQUET).value
    else:
        config.update(
            project=request.project, dataset=request.dataset, api_endpoint=request.api_endpoint
        )
    return config, secret


def create_connection(
    session: Session, settings: Settings, request: ConnectionCreate, project: str
) -> Connection:
    taken = select(ConnectionRow.id).where(
        ConnectionRow.project == project, ConnectionRow.name == request.name
    )
    if session.scalar(taken):
        raise AlreadyExistsError(f"connection {request.name!r} already exists", field="name")
    config, secret = _config(settings, request, project)
    # Only what this project may open (paths confined, hosts public unless allowed): 4xx here.
    check_connection(
        settings,
        project,
        ResolvedConnection(name=request.name, kind=request.kind, secret=secret, **config),
        opening=False,
    )
    row = ConnectionRow(
        id=new_id("conn"),
        project=project,
        name=request.name,
        kind=request.kind.value,
        description=request.description,
        labels=dict(request.labels),
        config=config,
        secret_ciphertext=secret_box(settings.secret_key_path).encrypt(secret) if secret else None,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExistsError(
            f"connection {request.name!r} already exists", field="name"
        ) from exc
    return to_model(row)


def list_connections(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    project: str,
    kind: ConnectionKind | None = None,
) -> Page[Connection]:
    query = select(ConnectionRow).where(ConnectionRow.project == project)
    if kind is not None:
        query = query.where(ConnectionRow.kind == kind.value)
    rows, next_token = fetch_page(session, query, ConnectionRow.id, page_size, page_token)
    return Page[Connection](items=[to_model(r) for r in rows], next_page_token=next_token)


def update_connection(
    session: Session, settings: Settings, ref: str, request: ConnectionUpdate, project: str
) -> Connection:
    row = get_connection_row(session, ref, project)
    if request.secret is not None and request.secret_env is not None:
        raise InvalidArgumentError("give either secret or secret_env, not both", field="secret_env")
    if (request.secret is not None or request.secret_env is not None) and row.kind == "duckdb":
        raise InvalidArgumentError("duckdb connections take no secret", field="secret")
    if request.description is not None:
        row.description = request.description
    if request.labels is not None:
        row.labels = dict(request.labels)
    if request.secret is not None:
        box = secret_box(settings.secret_key_path)
        row.secret_ciphertext = box.encrypt(request.secret.get_secret_value())
        row.config = {**row.config, "secret_env": None}
    if request.secret_env is not None:
        row.secret_ciphertext = None
        row.config = {**row.config, "secret_env": request.secret_env}
    session.flush()
    resolved = resolve_connection(session, settings, row.id, project)
    check_connection(settings, project, resolved, opening=False)
    return to_model(row)


def delete_connection(session: Session, ref: str, project: str) -> Connection:
    """Forget the connection; the warehouse and its tables are not touched."""
    row = get_connection_row(session, ref, project)
    deleted = to_model(row)
    session.delete(row)
    return deleted


def resolve_connection(
    session: Session, settings: Settings, ref: str, project: str
) -> ResolvedConnection:
    row = get_connection_row(session, ref, project)
    secret = None
    if row.secret_ciphertext is not None:
        secret = secret_box(settings.secret_key_path).decrypt(row.secret_ciphertext)
    config = {k: v for k, v in row.config.items() if v is not None}
    return ResolvedConnection(name=row.name, kind=ConnectionKind(row.kind), secret=secret, **config)


# Browsing ---------------------------------------------------------------------------------


def _warehouse(db: Database, settings: Settings, ref: str, project: str) -> Warehouse:
    with db.session() as session:
        resolved = resolve_connection(session, settings, ref, project)
    # Checked again now (a symlink made since must not get through), and opened as checked.
    resolved = check_connection(settings, project, resolved)
    # Imported on first browse: Ray Data, DuckDB and pyarrow stay out of server start-up.
    from raydeck.data.registry import open_warehouse

    return open_warehouse(resolved, server_side=True)


def list_datasets(db: Database, settings: Settings, ref: str, project: str) -> list[DatasetInfo]:
    return _warehouse(db, settings, ref, project).list_datasets()


def list_tables(
    db: Database, settings: Settings, ref: str, dataset: str | None, project: str
) -> list[TableInfo]:
    warehouse = _warehouse(db, settings, ref, project)
    return warehouse.list_tables(dataset or warehouse.default_dataset)


def table_info(
    db: Database, settings: Settings, ref: str, dataset: str | None, table: str, project: str
) -> TableInfo:
    warehouse = _warehouse(db, settings, ref, project)
    return warehouse.table_info(dataset or warehouse.default_dataset, table)


def find_table(
    db: Database, settings: Settings, ref: str, *, field: str, project: str
) -> TableInfo | None:
    """The table ``conn.dataset.table`` names (None when its connection has no such table);
    an unknown connection, or one that cannot be browsed, is an error naming ``field``."""
    parsed = TableRef.parse(ref, field=field)
    try:
        warehouse = _warehouse(db, settings, parsed.connection, project)
    except NotFoundError as exc:
        raise NotFoundError(exc.message, field=field) from exc
    dataset = parsed.dataset or warehouse.default_dataset
    try:
        return warehouse.table_info(dataset, parsed.table)
    except NotFoundError:
        return None


def preview_table(
    db: Database,
    settings: Settings,
    ref: str,
    dataset: str | None,
    table: str,
    limit: int,
    project: str,
) -> QueryResult:
    from raydeck.data.base import to_query_result

    warehouse = _warehouse(db, settings, ref, project)
    return to_query_result(
        warehouse.preview(dataset or warehouse.default_dataset, table, limit + 1), limit
    )


def query(
    db: Database, settings: Settings, ref: str, sql: str, limit: int, project: str
) -> QueryResult:
    from raydeck.data.base import to_query_result

    return to_query_result(_warehouse(db, settings, ref, project).query(sql, limit), limit)
