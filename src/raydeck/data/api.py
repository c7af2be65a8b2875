"""The module-level SDK: ``read_table``, ``read_query``, ``write_table``, ``sql_transform``."""

from __future__ import annotations

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
from ray.data import Dataset

from raydeck.client import RaydeckClient
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.warehouse import ResolvedConnection, TableRef, WriteMode, WriteResult
from raydeck.data.base import Warehouse, require_read_only_sql
from raydeck.data.registry import open_warehouse

__all__ = [
    "connect",
    "read_query",
    "read_table",
    "sql_transform",
    "transform_batches",
    "write_table",
]

ConnectionLike = str | ResolvedConnection | Warehouse


def connect(connection: ConnectionLike, *, client: RaydeckClient | None = None) -> Warehouse:
    """A ``Warehouse`` for a connection name (resolved through the control plane), a
    ``ResolvedConnection`` or an existing ``Warehouse``."""
    if isinstance(connection, Warehouse):
        return connection
    if isinstance(connection, ResolvedConnection):
        return open_warehouse(connection)
    if client is not None:
        return open_warehouse(client.connections.resolve(connection))
    with RaydeckClient() as own_client:
        return open_warehouse(own_client.connections.resolve(connection))


def _table(
    ref: str, client: RaydeckClient | None, warehouse: Warehouse | None, field: str
) -> tuple[Warehouse, str, str]:
    parsed = TableRef.parse(ref, field=field)
    if warehouse is not None and warehouse.name != parsed.connection:
        raise InvalidArgumentError(
            f"table {ref} is not on connection {warehouse.name!r}", field=field
        )
    wh = warehouse or connect(parsed.connection, client=client)
    return wh, parsed.dataset or wh.default_dataset, parsed.table


def read_table(
    ref: str,
    *,
    parallelism: int = -1,
    client: RaydeckClient | None = None,
    warehouse: Warehouse | None = None,
    num_cpus: float | None = None,
) -> Dataset:
    """``conn.dataset.table`` as a Dataset, read in parallel where the source allows
    (rowid or primary-key ranges, one task per file, row ranges for BigQuery); ``num_cpus``
    per read task (Ray Data's default: 1)."""
    wh, dataset, table = _table(ref, client, warehouse, "table")
    return wh.read_table(dataset, table, parallelism=parallelism, num_cpus=num_cpus)


def read_query(
    connection: ConnectionLike,
    sql: str,
    *,
    parallelism: int = -1,
    client: RaydeckClient | None = None,
) -> Dataset:
    """A read-only query's result, computed by the warehouse, streamed as a Dataset."""
    return connect(connection, client=client).read_query(sql, parallelism=parallelism)


def write_table(
    ds: Dataset,
    ref: str,
    mode: WriteMode | str = WriteMode.APPEND,
    *,
    client: RaydeckClient | None = None,
    warehouse: Warehouse | None = None,
) -> WriteResult:
    """Write ``ds`` to ``conn.dataset.table``: ``append`` (creating the table if needed),
    ``overwrite`` or ``create``. Staged, then committed at once: a failure changes nothing."""
    wh, dataset, table = _table(ref, client, warehouse, "table")
    return wh.write_table(ds, dataset, table, _mode(mode))


def sql_transform(
    connection: ConnectionLike,
    sql: str,
    *,
    into: str | None = None,
    mode: WriteMode | str = WriteMode.CREATE,
    client: RaydeckClient | None = None,
) -> Dataset | WriteResult:
    """Run ``sql`` inside the warehouse (push-down). With ``into`` (``conn.dataset.table``
    on the same connection) the result is materialized there and a ``WriteResult`` returned;
    without, the result comes back as a Dataset."""
    wh = connect(connection, client=client)
    if into is None:
        return wh.read_query(sql)
    _, dataset, table = _table(into, client, wh, "into")
    return wh.create_table_as(sql, dataset, table, _mode(mode))


def transform_batches(ds: Dataset, sql: str, *, table_name: str = "batch") -> Dataset:
    """Run ``sql`` over each batch of ``ds`` with DuckDB, the batch being ``table_name``.

    Row-wise SQL (projections, filters, expressions, CASE) gives the same result as over the
    whole dataset; aggregations apply per batch — aggregate in the warehouse instead
    (``sql_transform``) or with Dataset.groupby.
    """
    body = require_read_only_sql(sql)

    def apply(batch: pa.Table) -> pa.Table:
        con = duckdb.connect(":memory:")
        try:
            con.register(table_name, batch)
            return con.sql(body).to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidArgumentError(f"query failed in DuckDB: {exc}", field="sql") from exc
        finally:
            con.close()

    return ds.map_batches(apply, batch_format="pyarrow")


def _mode(mode: WriteMode | str) -> WriteMode:
    try:
        return WriteMode(mode)
    except ValueError:
        raise InvalidArgumentError(
            f"mode must be one of {', '.join(m.value for m in WriteMode)}, not {mode!r}",
            field="mode",
        ) from None
