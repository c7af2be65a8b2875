"""Connection kind → ``Warehouse`` implementation."""

from __future__ import annotations

from raydeck.core.errors import FailedPreconditionError
from raydeck.core.models.warehouse import ConnectionKind, ResolvedConnection
from raydeck.data.base import Warehouse
from raydeck.data.bigquery_warehouse import BigQueryWarehouse
from raydeck.data.duckdb_warehouse import DuckDBWarehouse
from raydeck.data.files_warehouse import FilesWarehouse
from raydeck.data.sql_warehouse import SqlWarehouse

__all__ = ["open_warehouse"]

_KINDS: dict[ConnectionKind, type[Warehouse]] = {
    ConnectionKind.DUCKDB: DuckDBWarehouse,
    ConnectionKind.SQL: SqlWarehouse,
    ConnectionKind.FILES: FilesWarehouse,
    ConnectionKind.BIGQUERY: BigQueryWarehouse,
}


def open_warehouse(connection: ResolvedConnection, *, server_side: bool = False) -> Warehouse:
    """A ``Warehouse`` for a resolved connection; it opens nothing until used.
    ``server_side``: opened by the control plane, locked down (see ``Warehouse``)."""
    kind = _KINDS.get(connection.kind)
    if kind is None:  # a kind a newer server knows and this SDK does not
        raise FailedPreconditionError(
            f"connection {connection.name!r} is of kind {connection.kind.value!r}, which "
            "cannot be browsed or read yet",
            field="connection",
        )
    return kind(connection, server_side=server_side)
