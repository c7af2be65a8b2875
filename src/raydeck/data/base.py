"""The ``Warehouse`` contract every connection kind implements, and shared helpers.

A warehouse does two jobs: browsing (datasets, tables with schemas and row counts, previews,
read-only queries — used by the control plane and the CLI) and Ray Data I/O (parallel reads
and staged, all-or-nothing writes — used by code on a cluster). Both take a
``ResolvedConnection``, which is picklable and travels into Ray Data read/write tasks.

Write contract: rows go to a staging area first (files or a staging table), written by Ray
Data write tasks in batches; the target table changes only in the final commit, which runs
once in the driver inside one transaction (or one atomic swap). A failure anywhere before or
during the commit leaves the target as it was.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import pyarrow as pa  # type: ignore[import-untyped]
from pydantic_core import to_jsonable_python
from ray.data import Dataset
from ray.data.datasource.datasink import Datasink

from raydeck.core.errors import InvalidArgumentError, RaydeckError
from raydeck.core.models.warehouse import (
    ColumnInfo,
    ConnectionKind,
    DatasetInfo,
    QueryResult,
    ResolvedConnection,
    TableInfo,
    WriteMode,
    WriteResult,
)

__all__ = [
    "TableDatasink",
    "Warehouse",
    "check_columns",
    "find_raydeck_error",
    "new_write_id",
    "quote",
    "require_read_only_sql",
    "to_query_result",
    "write_through",
]

_Return = TypeVar("_Return")


class TableDatasink(Datasink[_Return]):
    """A warehouse's staged, all-or-nothing table writer (see the module docstring).

    ``rows_written`` is exact once ``on_write_complete`` has committed. Callers may wrap it
    (batch prediction counts failed rows on the way through) as long as every Datasink hook
    is forwarded.
    """

    rows_written: int = 0


def write_through(ds: Dataset, sink: Datasink[Any]) -> None:
    """``ds.write_datasink(sink)``, with our own typed error out of Ray's wrappers."""
    try:
        ds.write_datasink(sink)
    except Exception as exc:
        raise (find_raydeck_error(exc) or exc) from exc


def quote(identifier: str) -> str:
    """Double-quoted SQL identifier (names are validated by TableRef; quotes still escaped)."""
    return '"' + identifier.replace('"', '""') + '"'


def new_write_id() -> str:
    return uuid.uuid4().hex[:12]


def check_columns(ref: str, table_columns: Sequence[str], data_columns: Sequence[str]) -> None:
    """A write's columns must be the table's columns (any order); raise naming the difference."""
    missing = [c for c in table_columns if c not in data_columns]
    extra = [c for c in data_columns if c not in table_columns]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"column(s) not in the table: {', '.join(extra)}")
        raise InvalidArgumentError(
            f"schema of the data does not match table {ref}: {'; '.join(parts)}", field="schema"
        )


def find_raydeck_error(exc: BaseException) -> RaydeckError | None:
    """The RaydeckError behind Ray's wrappers (RayTaskError, UserCodeException, causes)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, RaydeckError):  # RayTaskError(X): its message is a traceback
            return cause
        if isinstance(current, RaydeckError):
            return current
        stack.extend(
            [
                current.__cause__,
                current.__context__,
                cause if isinstance(cause, BaseException) else None,
            ]
        )
    return None


_LEADING_COMMENTS = re.compile(r"^(\s|--[^\n]*\n|/\*.*?\*/)*", re.DOTALL)
_READ_ONLY_FIRST_WORDS = ("select", "with", "values", "table", "explain", "show", "describe")


def require_read_only_sql(sql: str) -> str:
    """A first, dialect-free guard for one read-only statement; warehouses add their own
    (read-only transactions or connections), this only gives the clear error early."""
    body = sql.strip().rstrip(";").strip()
    if ";" in _strip_strings(body):
        raise InvalidArgumentError("only one statement per query", field="sql")
    head = _LEADING_COMMENTS.sub("", body).lstrip("(").lower()
    if not head.startswith(_READ_ONLY_FIRST_WORDS):
        first = head.split(None, 1)[0].upper() if head else "(empty)"
        raise InvalidArgumentError(
            f"queries here are read-only: {first} is not allowed (use SELECT or WITH)",
            field="sql",
        )
    return body


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", sql)


def to_query_result(table: pa.Table, limit: int) -> QueryResult:
    """At most ``limit`` rows as JSON values; ``truncated`` when the table had more."""
    shown = table.slice(0, limit)
    columns = [ColumnInfo(name=f.name, type=str(f.type), nullable=f.nullable) for f in table.schema]
    rows = [[_json_value(value) for value in row.values()] for row in shown.to_pylist()]
    return QueryResult(
        columns=columns, rows=rows, row_count=len(rows), truncated=table.num_rows > limit
    )


def _json_value(value: Any) -> Any:
    # Whole decimals (DuckDB's sum of integers is a HUGEINT/DECIMAL) read best as numbers.
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return to_jsonable_python(value, fallback=str)


class Warehouse(ABC):
    """One connection kind. Instances are cheap, hold no open connection, and pickle."""

    kind: ClassVar[ConnectionKind]

    def __init__(self, connection: ResolvedConnection, *, server_side: bool = False) -> None:
        self.connection = connection
        # Opened by the control plane for a user (browsing): no DuckDB extension is
        # installed or loaded and no file but the warehouse's own is opened.
        self.server_side = server_side

    @property
    def name(self) -> str:
        return self.connection.name

    def ref(self, dataset: str, table: str) -> str:
        return f"{self.name}.{dataset}.{table}"

    @property
    @abstractmethod
    def default_dataset(self) -> str:
        """Dataset used by ``conn.table`` references."""

    # Browsing (control plane, CLI) ------------------------------------------------------

    @abstractmethod
    def list_datasets(self) -> list[DatasetInfo]: ...

    @abstractmethod
    def list_tables(self, dataset: str) -> list[TableInfo]:
        """Tables of ``dataset`` with columns and row counts; NotFoundError if it is unknown."""

    @abstractmethod
    def table_info(self, dataset: str, table: str) -> TableInfo:
        """Columns and row count; NotFoundError naming the table when it does not exist."""

    @abstractmethod
    def preview(self, dataset: str, table: str, limit: int) -> pa.Table: ...

    @abstractmethod
    def query(self, sql: str, limit: int) -> pa.Table:
        """Run one read-only statement; at most ``limit + 1`` rows (to tell truncation).
        Writes are refused; warehouse errors become InvalidArgumentError(field="sql")."""

    # Ray Data (code on a cluster) -------------------------------------------------------

    @abstractmethod
    def read_table(self, dataset: str, table: str, *, parallelism: int = -1) -> Dataset: ...

    @abstractmethod
    def read_query(self, sql: str, *, parallelism: int = -1) -> Dataset: ...

    @abstractmethod
    def table_sink(self, dataset: str, table: str, mode: WriteMode) -> TableDatasink[Any]:
        """A datasink writing into ``dataset.table`` as ``mode`` says. Checks what it can
        up front (``create`` over an existing table, ``append`` with other columns)."""

    def write_table(self, ds: Dataset, dataset: str, table: str, mode: WriteMode) -> WriteResult:
        """Stage ``ds`` with Ray Data write tasks, then commit once; all or nothing."""
        sink = self.table_sink(dataset, table, mode)
        write_through(ds, sink)
        return WriteResult(
            table=self.ref(dataset, table), mode=mode, rows_written=sink.rows_written
        )

    @abstractmethod
    def create_table_as(self, sql: str, dataset: str, table: str, mode: WriteMode) -> WriteResult:
        """Push-down transform: run ``sql`` in the warehouse and store its result as a table."""

    def table_exists(self, dataset: str, table: str) -> bool:
        try:
            self.table_info(dataset, table)
        except RaydeckError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True


def column_names(schema: pa.Schema | None) -> list[str]:
    return [] if schema is None else list(schema.names)


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
