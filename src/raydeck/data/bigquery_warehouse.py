"""``bigquery`` connections: a BigQuery project (datasets are BigQuery datasets) through the
Google client library's REST API (``google-cloud-bigquery``), never the Storage API.

Why not Ray's own ``read_bigquery``/``write_bigquery``: Ray's BigQuery datasource reads
through the BigQuery Storage Read API (gRPC streams) and writes through load jobs; neither
reaches an endpoint that only speaks REST (an emulator, a proxy, the wire-level fake the
tests run). Everything here uses REST v2 resources only:

- browsing: ``datasets.list``, ``tables.list``, ``tables.get`` (schema and ``numRows``),
  read-only queries through ``jobs.insert`` + ``jobs.getQueryResults``;
- ``read_table``: ``tables.get``, then row ranges read in parallel with ``tabledata.list``
  (``startIndex``/``maxResults``, paged), one Ray Data task per range;
- ``read_query``: a query job writes its result to BigQuery's anonymous destination table,
  which is then read in parallel ranges the same way;
- ``write_table``: each write task creates its own staging table (``tables.insert``) in the
  target dataset and streams its blocks into it (``tabledata.insertAll``, with insert ids so
  retried requests do not duplicate rows); the driver then commits with ONE statement, which
  BigQuery runs atomically: ``CREATE TABLE … AS`` (create), ``CREATE OR REPLACE TABLE … AS``
  (overwrite) or ``INSERT INTO … SELECT`` (append) over the ``UNION ALL`` of the staging
  tables, and deletes them. A failure before or in that statement leaves the target as it was.

Credentials: the stored secret is a service-account JSON key; without one, a connection with
``api_endpoint`` (emulator or fake) uses anonymous credentials and one without uses the
environment's application-default credentials.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pyarrow as pa  # type: ignore[import-untyped]
import ray.data
import requests
from google.api_core import exceptions as google_errors
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery
from google.oauth2 import service_account
from pydantic_core import to_jsonable_python
from ray.data import Dataset
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource.datasink import WriteResult as RayWriteResult
from ray.data.datasource.datasource import Datasource, ReadTask

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RaydeckError,
    UnavailableError,
)
from raydeck.core.models.warehouse import (
    ColumnInfo,
    ConnectionKind,
    DatasetInfo,
    TableInfo,
    WriteMode,
    WriteResult,
)
from raydeck.data.base import (
    TableDatasink,
    Warehouse,
    check_columns,
    new_write_id,
    require_read_only_sql,
)

__all__ = ["BigQueryWarehouse", "arrow_to_bigquery_type"]

MIN_ROWS_PER_READ_TASK = 50_000
PAGE_ROWS = 20_000  # tabledata.list page size (the API caps a page at ~10 MB anyway)
INSERT_ROWS = 5_000  # rows per insertAll request (well under its 10 MB request limit)
STAGE_PREFIX = "_rd_stage_"


def arrow_to_bigquery_type(field: pa.Field) -> str:
    """Standard SQL type of a new column for an Arrow field."""
    t = field.type
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_integer(t):
        return "INT64"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_decimal(t):
        return "NUMERIC" if t.scale <= 9 and t.precision - t.scale <= 29 else "BIGNUMERIC"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "STRING"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz is not None else "DATETIME"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_time(t):
        return "TIME"
    raise InvalidArgumentError(
        f"column {field.name!r} has type {t}, which has no BigQuery column type here",
        field="schema",
    )


def _translate(exc: google_errors.GoogleAPICallError, what: str, field: str) -> RaydeckError:
    # The client appends "Location: …" and "Job ID: …" lines; the first line is the cause.
    message = (str(getattr(exc, "message", None) or exc).strip().splitlines() or ["?"])[0]
    if isinstance(exc, google_errors.NotFound):
        return NotFoundError(f"{what} not found: {message}", field=field)
    if isinstance(exc, google_errors.Conflict):
        return AlreadyExistsError(f"{what} already exists: {message}", field=field)
    if isinstance(exc, google_errors.BadRequest | google_errors.Forbidden):
        return InvalidArgumentError(f"{what} failed in BigQuery: {message}", field=field)
    return UnavailableError(f"BigQuery did not answer for {what}: {message}")


BROWSE_DEADLINE = 10.0  # seconds a server-side browse retries an endpoint that fails
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _endpoint_errors(method: _Method) -> _Method:
    """An endpoint that cannot be reached (or retried out): 4xx naming ``api_endpoint``
    (``connection`` without one), never a 500 or a request hanging for minutes."""

    @functools.wraps(method)
    def wrapper(self: BigQueryWarehouse, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (google_errors.RetryError, requests.exceptions.RequestException, OSError) as exc:
            endpoint = self.connection.api_endpoint
            where = f"api_endpoint {endpoint}" if endpoint else "BigQuery"
            raise FailedPreconditionError(
                f"connection {self.name!r}: {where} cannot be reached: {exc}"[:500],
                field="api_endpoint" if endpoint else "connection",
            ) from exc

    return cast(_Method, wrapper)


class BigQueryWarehouse(Warehouse):
    kind = ConnectionKind.BIGQUERY

    @property
    def _retry(self) -> Any:
        """Server-side browsing gives up after ``BROWSE_DEADLINE``; cluster code keeps the
        client library's default (minutes)."""
        if self.server_side:
            return bigquery.DEFAULT_RETRY.with_deadline(BROWSE_DEADLINE)
        return bigquery.DEFAULT_RETRY

    # Client ---------------------------------------------------------------------------------

    @property
    def project(self) -> str:
        if not self.connection.project:
            raise InvalidArgumentError(f"connection {self.name!r} has no project", field="project")
        return self.connection.project

    def _credentials(self) -> Credentials | None:
        secret = self.connection.secret_value()
        if secret is not None:
            try:
                info = json.loads(secret)
            except ValueError:
                raise InvalidArgumentError(
                    f"connection {self.name!r}: its secret is not a service-account JSON key",
                    field="secret",
                ) from None
            return cast(
                Credentials,
                service_account.Credentials.from_service_account_info(info),  # type: ignore[no-untyped-call]
            )
        if self.connection.api_endpoint:
            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        return None  # application-default credentials of the environment

    def client(self) -> bigquery.Client:
        """A new client (clients hold HTTP sessions; they do not cross processes)."""
        options = (
            ClientOptions(api_endpoint=self.connection.api_endpoint)
            if self.connection.api_endpoint
            else None
        )
        return bigquery.Client(
            project=self.project, credentials=self._credentials(), client_options=options
        )

    def table_id(self, dataset: str, table: str) -> str:
        return f"{self.project}.{dataset}.{table}"

    def quoted(self, dataset: str, table: str) -> str:
        return f"`{self.table_id(dataset, table)}`"

    @property
    def default_dataset(self) -> str:
        if not self.connection.dataset:
            raise InvalidArgumentError(
                f"connection {self.name!r} has no default dataset; name one in the reference "
                "(connection.dataset.table)",
                field="table",
            )
        return self.connection.dataset

    # Browsing -------------------------------------------------------------------------------

    @_endpoint_errors
    def list_datasets(self) -> list[DatasetInfo]:
        with self.client() as client:
            try:
                names = [d.dataset_id for d in client.list_datasets(retry=self._retry)]
            except google_errors.GoogleAPICallError as exc:
                raise _translate(exc, f"project {self.project}", "connection") from exc
        return [DatasetInfo(name=n) for n in sorted(names)]

    @_endpoint_errors
    def list_tables(self, dataset: str) -> list[TableInfo]:
        with self.client() as client:
            try:
                items = list(client.list_tables(f"{self.project}.{dataset}", retry=self._retry))
            except google_errors.GoogleAPICallError as exc:
                raise _translate(exc, f"dataset {self.name}.{dataset}", "dataset") from exc
            names = sorted(
                i.table_id for i in items if not str(i.table_id).startswith(STAGE_PREFIX)
            )
            return [self._info(client, dataset, n) for n in names]

    @_endpoint_errors
    def table_info(self, dataset: str, table: str) -> TableInfo:
        with self.client() as client:
            return self._info(client, dataset, table)

    def _get_table(self, client: bigquery.Client, dataset: str, table: str) -> bigquery.Table:
        try:
            return client.get_table(self.table_id(dataset, table), retry=self._retry)
        except google_errors.NotFound:
            raise NotFoundError(
                f"table {self.ref(dataset, table)} not found", field="table"
            ) from None
        except google_errors.GoogleAPICallError as exc:
            raise _translate(exc, f"table {self.ref(dataset, table)}", "table") from exc

    def _info(self, client: bigquery.Client, dataset: str, table: str) -> TableInfo:
        found = self._get_table(client, dataset, table)
        columns = [
            ColumnInfo(name=f.name, type=f.field_type, nullable=f.mode != "REQUIRED")
            for f in found.schema
        ]
        return TableInfo(
            connection=self.name,
            dataset=dataset,
            name=table,
            columns=columns,
            row_count=int(found.num_rows or 0),
        )

    @_endpoint_errors
    def preview(self, dataset: str, table: str, limit: int) -> pa.Table:
        with self.client() as client:
            found = self._get_table(client, dataset, table)
            rows = client.list_rows(found, max_results=limit, retry=self._retry)
            return rows.to_arrow(create_bqstorage_client=False)

    def _run_query(
        self, client: bigquery.Client, sql: str, max_results: int = 0
    ) -> tuple[bigquery.QueryJob, Any]:
        """Run ``sql`` and wait; errors in the SQL surface here. Returns the job and an
        iterator over at most ``max_results`` rows of its result."""
        try:
            job = client.query(sql, retry=self._retry)
            return job, job.result(max_results=max_results, retry=self._retry)
        except google_errors.GoogleAPICallError as exc:
            raise _translate(exc, "query", "sql") from exc

    @_endpoint_errors
    def query(self, sql: str, limit: int) -> pa.Table:
        body = require_read_only_sql(sql)
        with self.client() as client:
            job, rows = self._run_query(client, body, limit + 1)
            if job.statement_type not in (None, "SELECT"):
                raise InvalidArgumentError(
                    f"queries here are read-only, not {job.statement_type}", field="sql"
                )
            try:
                return rows.to_arrow(create_bqstorage_client=False)
            except google_errors.GoogleAPICallError as exc:
                raise _translate(exc, "query", "sql") from exc

    # Ray Data -------------------------------------------------------------------------------

    def read_table(
        self, dataset: str, table: str, *, parallelism: int = -1, num_cpus: float | None = None
    ) -> Dataset:
        with self.client() as client:
            found = self._get_table(client, dataset, table)
        return self._read_ranges(found, parallelism, num_cpus)

    def read_query(self, sql: str, *, parallelism: int = -1) -> Dataset:
        body = require_read_only_sql(sql)
        with self.client() as client:
            job, _ = self._run_query(client, body)
            if job.destination is None:
                raise InvalidArgumentError("the query produced no result table", field="sql")
            try:
                result = client.get_table(job.destination)
            except google_errors.GoogleAPICallError as exc:
                raise _translate(exc, "query result", "sql") from exc
        return self._read_ranges(result, parallelism)

    def _read_ranges(
        self, table: bigquery.Table, parallelism: int, num_cpus: float | None = None
    ) -> Dataset:
        source = _RowRangeDatasource(
            self,
            table.reference.dataset_id,
            table.reference.table_id,
            [f.to_api_repr() for f in table.schema],
            int(table.num_rows or 0),
        )
        blocks = None if parallelism <= 0 else parallelism
        return cast(
            Dataset,
            ray.data.read_datasource(source, override_num_blocks=blocks, num_cpus=num_cpus),
        )

    def table_sink(self, dataset: str, table: str, mode: WriteMode) -> _StagingTablesDatasink:
        ref = self.ref(dataset, table)
        expected = None
        try:
            info = self.table_info(dataset, table)
        except NotFoundError:
            info = None
        if info is not None and mode is WriteMode.CREATE:
            raise AlreadyExistsError(f"table {ref} already exists (mode=create)", field="table")
        if info is not None and mode is WriteMode.APPEND:
            expected = [c.name for c in info.columns]
        return _StagingTablesDatasink(self, dataset, table, mode, expected)

    def commit(
        self, dataset: str, table: str, mode: WriteMode, names: list[str], select: str
    ) -> None:
        """One statement, atomic in BigQuery: the target changes wholly or not at all."""
        target = self.quoted(dataset, table)
        columns = ", ".join(f"`{n}`" for n in names)
        with self.client() as client:
            exists = True
            try:
                client.get_table(self.table_id(dataset, table))
            except google_errors.NotFound:
                exists = False
            if mode is WriteMode.APPEND and exists:
                statement = f"INSERT INTO {target} ({columns}) {select}"
            elif mode is WriteMode.OVERWRITE:
                statement = f"CREATE OR REPLACE TABLE {target} AS {select}"
            else:  # create (refused by BigQuery itself if it appeared meanwhile), new append
                statement = f"CREATE TABLE {target} AS {select}"
            try:
                client.query(statement).result()
            except google_errors.Conflict as exc:
                raise AlreadyExistsError(
                    f"table {self.ref(dataset, table)} already exists (mode=create)",
                    field="table",
                ) from exc
            except google_errors.GoogleAPICallError as exc:
                cause = _translate(exc, "write", "schema").message
                raise InvalidArgumentError(
                    f"{cause}; table {self.ref(dataset, table)} unchanged", field="schema"
                ) from exc

    def drop_tables(self, dataset: str, names: list[str]) -> None:
        with self.client() as client:
            for name in names:
                # best effort: staging tables are never read, and a later cleanup may drop them
                with contextlib.suppress(google_errors.GoogleAPICallError):
                    client.delete_table(self.table_id(dataset, name), not_found_ok=True)

    def create_table_as(self, sql: str, dataset: str, table: str, mode: WriteMode) -> WriteResult:
        body = require_read_only_sql(sql)
        ref = self.ref(dataset, table)
        with self.client() as client:
            try:
                before = int(client.get_table(self.table_id(dataset, table)).num_rows or 0)
                exists = True
            except google_errors.NotFound:
                before, exists = 0, False
        if exists and mode is WriteMode.CREATE:
            raise AlreadyExistsError(f"table {ref} already exists (mode=create)", field="table")
        if exists and mode is WriteMode.APPEND:
            with self.client() as client:
                _, probe = self._run_query(client, f"SELECT * FROM ({body}) LIMIT 0")
                names = [f.name for f in probe.schema]
            info = self.table_info(dataset, table)
            check_columns(ref, [c.name for c in info.columns], names)
        else:
            names, before = [], 0
        self.commit(dataset, table, mode, names, body)
        after = self.table_info(dataset, table).row_count or 0
        return WriteResult(table=ref, mode=mode, rows_written=after - before)


def _arrow_schema(fields: list[dict[str, Any]]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField.from_api_repr(f) for f in fields]


class _RowRangeDatasource(Datasource):
    """Row ranges of one table, each read by one task with paged ``tabledata.list``."""

    def __init__(
        self,
        warehouse: BigQueryWarehouse,
        dataset: str,
        table: str,
        schema: list[dict[str, Any]],
        rows: int,
    ) -> None:
        self.warehouse, self.dataset, self.table = warehouse, dataset, table
        self.schema, self.rows = schema, rows

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        tasks = max(1, min(parallelism, math.ceil(self.rows / MIN_ROWS_PER_READ_TASK)))
        bounds = [self.rows * i // tasks for i in range(tasks + 1)]
        return [
            ReadTask(self._read_fn(bounds[i], bounds[i + 1]), BlockMetadata(None, None, None, None))
            for i in range(tasks)
        ]

    def _read_fn(self, first: int, stop: int) -> Any:
        warehouse, dataset, table, schema = self.warehouse, self.dataset, self.table, self.schema

        def read() -> Iterator[Block]:
            fields = _arrow_schema(schema)
            with warehouse.client() as client:
                rows = client.list_rows(
                    warehouse.table_id(dataset, table),
                    selected_fields=fields,
                    start_index=first,
                    max_results=max(stop - first, 0),
                    page_size=PAGE_ROWS,
                )
                emitted = False
                if stop > first:
                    for batch in rows.to_arrow_iterable():
                        emitted = True
                        yield pa.Table.from_batches([batch])
                if not emitted:
                    yield rows.to_arrow(create_bqstorage_client=False).slice(0, 0)

        return read


def _json_rows(table: pa.Table) -> list[dict[str, Any]]:
    return [to_jsonable_python(row, fallback=str) for row in table.to_pylist()]


class _StagingTablesDatasink(TableDatasink[dict[str, Any] | None]):
    def __init__(
        self,
        warehouse: BigQueryWarehouse,
        dataset: str,
        table: str,
        mode: WriteMode,
        expected: list[str] | None,
    ) -> None:
        self.warehouse, self.dataset, self.table, self.mode = warehouse, dataset, table, mode
        self.expected = expected
        self.write_id = new_write_id()
        self.schema: pa.Schema | None = None
        self.rows_written = 0

    @property
    def ref(self) -> str:
        return self.warehouse.ref(self.dataset, self.table)

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        # The schema *before* maps fused into the write tasks: a fallback for empty writes
        # only; each task checks its first block.
        self.schema = schema

    def write(self, blocks: Any, ctx: Any) -> dict[str, Any] | None:
        warehouse = self.warehouse
        name = f"{STAGE_PREFIX}{self.write_id}_{ctx.task_idx}"
        created = False
        rows = 0
        columns: list[str] = []
        with warehouse.client() as client:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if not created:
                    if self.expected is not None:
                        check_columns(self.ref, self.expected, table.schema.names)
                    stage = bigquery.Table(
                        warehouse.table_id(self.dataset, name),
                        schema=[
                            bigquery.SchemaField(f.name, arrow_to_bigquery_type(f))
                            for f in table.schema
                        ],
                    )
                    try:
                        client.create_table(stage)
                    except google_errors.GoogleAPICallError as exc:
                        raise _translate(exc, f"staging table for {self.ref}", "table") from exc
                    created = True
                    columns = list(table.schema.names)
                records = _json_rows(table)
                for start in range(0, len(records), INSERT_ROWS):
                    chunk = records[start : start + INSERT_ROWS]
                    ids = [f"{name}-{rows + start + i}" for i in range(len(chunk))]
                    try:
                        errors = client.insert_rows_json(
                            warehouse.table_id(self.dataset, name), chunk, row_ids=ids
                        )
                    except google_errors.GoogleAPICallError as exc:
                        raise _translate(exc, f"staging rows for {self.ref}", "schema") from exc
                    if errors:
                        raise InvalidArgumentError(
                            f"staging rows for {self.ref} failed: {errors[0]}"[:1000],
                            field="schema",
                        )
                rows += table.num_rows
        return {"table": name, "rows": rows, "columns": columns} if created else None

    def on_write_complete(self, write_result: RayWriteResult[dict[str, Any] | None]) -> None:
        staged = [r for r in write_result.write_returns if r is not None]
        try:
            if staged:
                names = list(staged[0]["columns"])
                columns = ", ".join(f"`{n}`" for n in names)
                select = " UNION ALL ".join(
                    f"SELECT {columns} FROM {self.warehouse.quoted(self.dataset, r['table'])}"
                    for r in staged
                )
            else:
                names = list(self.schema.names) if self.schema is not None else []
                if not names:
                    raise InvalidArgumentError(
                        f"nothing was written and table {self.ref} has no columns to create",
                        field="table",
                    )
                assert self.schema is not None
                select = (
                    "SELECT "
                    + ", ".join(
                        f"CAST(NULL AS {arrow_to_bigquery_type(f)}) AS `{f.name}`"
                        for f in self.schema
                    )
                    + " LIMIT 0"
                )
            self.warehouse.commit(self.dataset, self.table, self.mode, names, select)
        finally:
            self.warehouse.drop_tables(self.dataset, [r["table"] for r in staged])
        self.rows_written = sum(int(r["rows"]) for r in staged)

    def on_write_failed(self, error: Exception) -> None:
        prefix = f"{STAGE_PREFIX}{self.write_id}_"
        with self.warehouse.client() as client:
            try:
                names = [
                    t.table_id
                    for t in client.list_tables(f"{self.warehouse.project}.{self.dataset}")
                    if str(t.table_id).startswith(prefix)
                ]
            except google_errors.GoogleAPICallError:
                return
        self.warehouse.drop_tables(self.dataset, names)
