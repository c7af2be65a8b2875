"""Warehouse connections and table references, shared by server, SDK, CLI and cluster code.

A connection names a place tables live: an embedded DuckDB file, any SQLAlchemy database,
a BigQuery project or a tree of Parquet/CSV/JSONL files. Tables are addressed as
``conn.dataset.table`` (``conn.table`` uses the connection's default dataset). Secrets are
write-only: ``Connection`` (what the API returns) only says whether one is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.common import NAME_PATTERN, LenientModel, Name, StrictModel
from raydeck.core.models.limits import LabelMap

__all__ = [
    "IDENTIFIER_PATTERN",
    "ColumnInfo",
    "Connection",
    "ConnectionCreate",
    "ConnectionKind",
    "ConnectionUpdate",
    "DatasetInfo",
    "FileFormat",
    "QueryRequest",
    "QueryResult",
    "ResolvedConnection",
    "TableInfo",
    "TableRef",
    "WriteMode",
    "WriteResult",
]

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_CONNECTION = re.compile(NAME_PATTERN)
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class ConnectionKind(StrEnum):
    DUCKDB = "duckdb"
    SQL = "sql"
    BIGQUERY = "bigquery"
    FILES = "files"


class FileFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"
    JSONL = "jsonl"


class WriteMode(StrEnum):
    APPEND = "append"  # add rows; creates the table when it does not exist
    OVERWRITE = "overwrite"  # replace the rows (and schema) in one step
    CREATE = "create"  # new table; refused when it exists


# Which optional fields belong to which kind, and which of them are required.
_FIELDS_BY_KIND: dict[str, dict[ConnectionKind, bool]] = {
    "path": {ConnectionKind.DUCKDB: False},
    "url": {ConnectionKind.SQL: True},
    "root": {ConnectionKind.FILES: True},
    "format": {ConnectionKind.FILES: False},
    "project": {ConnectionKind.BIGQUERY: True},
    "dataset": {ConnectionKind.BIGQUERY: False},
    "api_endpoint": {ConnectionKind.BIGQUERY: False},
    "secret": {
        ConnectionKind.SQL: False,
        ConnectionKind.BIGQUERY: False,
        ConnectionKind.FILES: False,
    },
    "secret_env": {
        ConnectionKind.SQL: False,
        ConnectionKind.BIGQUERY: False,
        ConnectionKind.FILES: False,
    },
}


class ConnectionCreate(StrictModel):
    """A new connection. Fields other than name/kind/description/labels belong to one kind."""

    name: Name
    kind: ConnectionKind
    description: Annotated[str, Field(max_length=2000)] | None = None
    labels: LabelMap = Field(default_factory=dict)
    path: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None,
        validate_default=True,
        description="duckdb: database file (default $RAYDECK_HOME/warehouse/<name>.duckdb)",
    )
    url: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None,
        validate_default=True,
        description="sql: SQLAlchemy URL; a password in it is moved to the encrypted secret",
    )
    root: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None,
        validate_default=True,
        description="files: local directory or fsspec URI; datasets are its sub-directories",
    )
    format: FileFormat | None = Field(
        default=None, validate_default=True, description="files: parquet (default), csv, jsonl"
    )
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")] | None = Field(
        default=None, validate_default=True, description="bigquery: project id"
    )
    dataset: Annotated[str, Field(pattern=IDENTIFIER_PATTERN)] | None = Field(
        default=None, validate_default=True, description="bigquery: default dataset"
    )
    api_endpoint: Annotated[str, Field(pattern=r"^https?://", max_length=512)] | None = Field(
        default=None,
        validate_default=True,
        description="bigquery: alternative API root (an emulator or a local fake)",
    )
    secret: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="sql: password; bigquery: service-account JSON; files: fsspec storage "
        "options as JSON. Stored encrypted, never returned.",
    )
    secret_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = Field(
        default=None,
        validate_default=True,
        description="instead of secret: the environment variable holding it where code runs",
    )

    @field_validator(
        "path",
        "url",
        "root",
        "format",
        "project",
        "dataset",
        "api_endpoint",
        "secret",
        "secret_env",
    )
    @classmethod
    def _belongs_to_kind(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if kind is None or info.field_name is None:
            return value  # kind itself is invalid; that error is reported
        allowed = _FIELDS_BY_KIND[info.field_name]
        if value is None:
            if allowed.get(kind):
                raise ValueError(f"required for kind {kind.value!r}")
            return value
        if kind not in allowed:
            kinds = ", ".join(k.value for k in allowed)
            raise ValueError(f"only for kind {kinds}, not {kind.value!r}")
        if info.field_name == "secret_env" and info.data.get("secret") is not None:
            raise ValueError("give either secret or secret_env, not both")
        return value


class ConnectionUpdate(StrictModel):
    description: Annotated[str, Field(max_length=2000)] | None = None
    labels: LabelMap | None = None
    secret: SecretStr | None = Field(default=None, description="replace the stored secret")
    secret_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None


class Connection(LenientModel):
    """A stored connection as the API returns it: never the secret itself."""

    id: str
    name: str
    kind: ConnectionKind
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    path: str | None = None
    url: str | None = None  # without the password
    root: str | None = None
    format: FileFormat | None = None
    project: str | None = None
    dataset: str | None = None
    api_endpoint: str | None = None
    secret_env: str | None = None
    has_secret: bool = False
    created_at: datetime
    updated_at: datetime


class ResolvedConnection(LenientModel):
    """Everything code on a cluster needs to open a connection, the secret included.

    Picklable, so Ray Data read/write tasks receive it; ``SecretStr`` keeps the secret out of
    reprs and logs. Only the SDK asks for it (``connections.resolve``), never the CLI.
    """

    name: str
    kind: ConnectionKind
    path: str | None = None
    url: str | None = None
    root: str | None = None
    format: FileFormat = FileFormat.PARQUET
    project: str | None = None
    dataset: str | None = None
    api_endpoint: str | None = None
    secret: SecretStr | None = None
    secret_env: str | None = None

    def secret_value(self, environ: dict[str, str] | None = None) -> str | None:
        """The stored secret, or the one in ``secret_env`` of the process it runs in."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_env:
            value = (environ or {}).get(self.secret_env)
            if value is None:
                raise InvalidArgumentError(
                    f"connection {self.name!r} takes its secret from ${self.secret_env}, "
                    "which is not set here",
                    field="secret_env",
                )
            return value
        return None


@dataclass(frozen=True)
class TableRef:
    """``conn.dataset.table`` (or ``conn.table``: the connection's default dataset)."""

    connection: str
    dataset: str | None
    table: str

    @classmethod
    def parse(cls, text: str, *, field: str = "table") -> TableRef:
        parts = text.split(".") if isinstance(text, str) else []
        if len(parts) not in (2, 3):
            raise InvalidArgumentError(
                f"table reference {text!r} must look like connection.dataset.table "
                "(or connection.table)",
                field=field,
            )
        connection, table = parts[0], parts[-1]
        dataset = parts[1] if len(parts) == 3 else None
        if not _CONNECTION.match(connection):
            raise InvalidArgumentError(
                f"table reference {text!r}: {connection!r} is not a connection name "
                "(lowercase letters, digits, '-')",
                field=field,
            )
        for label, value in (("dataset", dataset), ("table", table)):
            if value is not None and not _IDENTIFIER.match(value):
                raise InvalidArgumentError(
                    f"table reference {text!r}: {label} {value!r} must be letters, digits and "
                    "'_', not starting with a digit",
                    field=field,
                )
        return cls(connection, dataset, table)

    def with_dataset(self, dataset: str) -> TableRef:
        return TableRef(self.connection, self.dataset or dataset, self.table)

    def __str__(self) -> str:
        if self.dataset is None:
            return f"{self.connection}.{self.table}"
        return f"{self.connection}.{self.dataset}.{self.table}"


class ColumnInfo(LenientModel):
    name: str
    type: str
    nullable: bool | None = None


class DatasetInfo(LenientModel):
    name: str


class TableInfo(LenientModel):
    connection: str
    dataset: str
    name: str
    columns: list[ColumnInfo] = Field(default_factory=list)
    row_count: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.connection}.{self.dataset}.{self.name}"


class QueryRequest(StrictModel):
    sql: Annotated[str, Field(min_length=1, max_length=100_000)]
    limit: Annotated[int, Field(ge=1, le=10_000)] = 100


class QueryResult(LenientModel):
    """Rows as JSON values (dates and decimals as strings), at most ``limit`` of them."""

    columns: list[ColumnInfo]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = False


class WriteResult(LenientModel):
    table: str
    mode: WriteMode
    rows_written: int
