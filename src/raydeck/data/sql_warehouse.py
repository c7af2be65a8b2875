"""``sql`` connections: any database SQLAlchemy reaches (Postgres tested; SQLite works).

Datasets are schemas. Reads split a table with a single integer primary key into key
ranges, one Ray Data task each (others are streamed by one task). Writes: every write task
streams its blocks into its own staging table ``_rd_stage_<write>_<task>`` in the target
schema, committing per block; the driver then, in one transaction, creates or empties the
target as the mode says, copies every staging table into it and drops them. Any failure
before that commit drops the staging tables and leaves the target as it was. (Databases
without transactional DDL — MySQL — cannot roll back a table created in that transaction.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, cast

import pyarrow as pa  # type: ignore[import-untyped]
import ray.data
import sqlalchemy as sa
from ray.data import Dataset
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource.datasink import WriteResult as RayWriteResult
from ray.data.datasource.datasource import Datasource, ReadTask
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from raydeck.core.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
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

__all__ = ["SqlWarehouse", "arrow_to_sql_type", "bulk_insert", "sql_to_arrow_type"]

# Below this a range is not worth a task of its own (task start and block hand-off cost
# more than reading the rows).
MIN_ROWS_PER_READ_TASK = 200_000
ROWS_PER_BLOCK = 65_536
INSERT_CHUNK = 10_000
_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast"}
STAGE_PREFIX = "_rd_stage_"
# Drivers whose cursor.rowcount after INSERT … SELECT is the number of rows inserted.
_EXACT_ROWCOUNT_DRIVERS = frozenset({"pysqlite", "psycopg", "psycopg2"})


def arrow_to_sql_type(field: pa.Field) -> sa.types.TypeEngine[Any]:
    t = field.type
    if pa.types.is_null(t):  # all values missing in this block: any nullable type holds them
        return sa.Text()
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_int64(t) or pa.types.is_unsigned_integer(t):
        return sa.BigInteger()
    if pa.types.is_integer(t):
        return sa.Integer()
    if pa.types.is_float64(t):
        return sa.Double()
    if pa.types.is_floating(t):
        return sa.Float()
    if pa.types.is_decimal(t):
        return sa.Numeric(t.precision, t.scale)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return sa.Text()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return sa.LargeBinary()
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_time(t):
        return sa.Time()
    raise InvalidArgumentError(
        f"column {field.name!r} has type {t}, which has no SQL column type here", field="schema"
    )


def sql_to_arrow_type(column_type: Any) -> pa.DataType | None:
    """Arrow type for reading a column (None: let Arrow infer from the values)."""
    if isinstance(column_type, sa.Boolean):
        return pa.bool_()
    if isinstance(column_type, sa.Integer):
        return pa.int64()
    if isinstance(column_type, sa.Float):
        return pa.float64()
    if isinstance(column_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if column_type.timezone else None)
    if isinstance(column_type, sa.Date):
        return pa.date32()
    if isinstance(column_type, sa.String):
        return pa.string()
    if isinstance(column_type, sa.LargeBinary):
        return pa.binary()
    return None


def bulk_insert(conn: Connection, stage: sa.Table, table: pa.Table) -> None:
    """Insert ``table``'s rows (columns in ``stage``'s order) through the driver itself:
    COPY on psycopg, else ``executemany`` of tuples. SQLAlchemy's per-row dict binding costs
    about ten times what the database spends on the rows; only column types that need a
    bind processor (SQLite dates, for one) get it, applied per column."""
    if not table.num_rows:
        return
    dialect = conn.dialect
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    copies = dialect.driver == "psycopg"
    if marker is None and not copies:  # named/numeric paramstyles: SQLAlchemy binds them
        records = table.rename_columns(list(stage.columns.keys())).to_pylist()
        for start in range(0, len(records), INSERT_CHUNK):
            conn.execute(stage.insert(), records[start : start + INSERT_CHUNK])
        return
    columns = []
    for column, values in zip(stage.columns, table.columns, strict=True):
        python_values = values.to_pylist()
        process = column.type.bind_processor(dialect)
        if process is not None:
            python_values = [None if v is None else process(v) for v in python_values]
        columns.append(python_values)
    rows = list(zip(*columns, strict=True))
    target = dialect.identifier_preparer.format_table(stage)
    names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in stage.columns)
    if copies:
        raw = conn.connection.driver_connection
        assert raw is not None  # a checked-out connection always has its driver's
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    assert marker is not None  # handled above: neither COPY nor a positional paramstyle
    sql = f"INSERT INTO {target} ({names}) VALUES ({', '.join([marker] * len(stage.columns))})"
    for start in range(0, len(rows), INSERT_CHUNK):
        conn.exec_driver_sql(sql, rows[start : start + INSERT_CHUNK])


def _rows_to_arrow(names: list[str], rows: list[Any], types: list[pa.DataType | None]) -> pa.Table:
    # One list per column by index: several times faster than transposing with zip(*rows).
    arrays = [_column([row[i] for row in rows], t) for i, t in enumerate(types[: len(names)])]
    return pa.table(dict(zip(names, arrays, strict=True)))


def _column(values: list[Any], kind: pa.DataType | None) -> pa.Array:
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # SQLite's booleans are the integers 0/1
        return pa.array(values).cast(kind)


class SqlWarehouse(Warehouse):
    kind = ConnectionKind.SQL

    def _url(self) -> URL:
        if not self.connection.url:
            raise InvalidArgumentError(f"connection {self.name!r} has no url", field="url")
        url = make_url(self.connection.url)
        secret = self.connection.secret_value()
        return url.set(password=secret) if secret is not None else url

    def engine(self) -> Engine:
        """A new engine without a pool: engines do not cross process boundaries."""
        engine = sa.create_engine(self._url(), poolclass=NullPool)
        if engine.dialect.name == "sqlite":
            _transactional_ddl_for_sqlite(engine)
        return engine

    @property
    def dialect_name(self) -> str:
        return str(self._url().get_dialect().name)

    def dbapi_connection(self) -> Any:
        """A plain DB-API connection of the URL's driver (for read tasks: see ``_stream``)."""
        engine = sa.create_engine(self._url(), poolclass=NullPool)
        try:
            cargs, cparams = engine.dialect.create_connect_args(engine.url)
            return engine.dialect.connect(*cargs, **cparams)
        except Exception as exc:  # the driver's own error class: no SQLAlchemy wrapper here
            raise _unavailable(self.name, exc) from exc
        finally:
            engine.dispose()

    @property
    def default_dataset(self) -> str:
        engine = self.engine()
        try:
            return str(sa.inspect(engine).default_schema_name or "main")
        except SQLAlchemyError as exc:
            raise _unavailable(self.name, exc) from exc
        finally:
            engine.dispose()

    # Browsing ---------------------------------------------------------------------------

    def list_datasets(self) -> list[DatasetInfo]:
        with self._connect() as conn:
            names = sa.inspect(conn).get_schema_names()
        return [DatasetInfo(name=n) for n in sorted(names) if n not in _SYSTEM_SCHEMAS]

    def list_tables(self, dataset: str) -> list[TableInfo]:
        with self._connect() as conn:
            inspector = sa.inspect(conn)
            if dataset not in inspector.get_schema_names():
                raise NotFoundError(f"dataset {self.name}.{dataset} not found", field="dataset")
            names = [
                n
                for n in inspector.get_table_names(schema=dataset)
                if not n.startswith(STAGE_PREFIX)
            ]
            return [self._info(conn, dataset, n) for n in sorted(names)]

    def table_info(self, dataset: str, table: str) -> TableInfo:
        with self._connect() as conn:
            return self._info(conn, dataset, table)

    def _table(self, conn: Connection, dataset: str, table: str) -> sa.Table:
        try:
            return sa.Table(table, sa.MetaData(), schema=dataset, autoload_with=conn)
        except NoSuchTableError:
            raise NotFoundError(
                f"table {self.ref(dataset, table)} not found", field="table"
            ) from None

    def _info(self, conn: Connection, dataset: str, table: str) -> TableInfo:
        reflected = self._table(conn, dataset, table)
        count = conn.execute(sa.select(sa.func.count()).select_from(reflected)).scalar_one()
        columns = [
            ColumnInfo(name=c.name, type=str(c.type), nullable=bool(c.nullable))
            for c in reflected.columns
        ]
        return TableInfo(
            connection=self.name, dataset=dataset, name=table, columns=columns, row_count=int(count)
        )

    def preview(self, dataset: str, table: str, limit: int) -> pa.Table:
        with self._connect() as conn:
            reflected = self._table(conn, dataset, table)
            rows = list(conn.execute(sa.select(reflected).limit(limit)).all())
            return _rows_to_arrow(
                [c.name for c in reflected.columns],
                rows,
                [sql_to_arrow_type(c.type) for c in reflected.columns],
            )

    def query(self, sql: str, limit: int) -> pa.Table:
        body = require_read_only_sql(sql)
        with self._connect() as conn:
            transaction = conn.begin()
            try:
                _read_only_transaction(conn)
                result = conn.exec_driver_sql(_driver_sql(conn, body))
                names = list(result.keys())
                rows = result.fetchmany(limit + 1)
            except DBAPIError as exc:
                raise InvalidArgumentError(
                    f"query failed in the database: {exc.orig}", field="sql"
                ) from exc
            finally:
                transaction.rollback()  # read-only, and nothing it did may stay
        return _rows_to_arrow(names, list(rows), [None] * len(names))

    def _connect(self) -> _EngineConnection:
        return _EngineConnection(self)

    # Ray Data ---------------------------------------------------------------------------

    def read_table(
        self, dataset: str, table: str, *, parallelism: int = -1, num_cpus: float | None = None
    ) -> Dataset:
        with self._connect() as conn:
            reflected = self._table(conn, dataset, table)  # once, here: tasks get plain SQL
            key = _integer_key(reflected)
            low = high = None
            rows = 0
            if key is not None:
                low, high, rows = conn.execute(
                    sa.select(sa.func.min(key), sa.func.max(key), sa.func.count()).select_from(
                        reflected
                    )
                ).one()
            preparer = conn.dialect.identifier_preparer
            columns = ", ".join(preparer.quote(c.name) for c in reflected.columns)
            select = f"SELECT {columns} FROM {preparer.format_table(reflected)}"
            key_name = preparer.quote(key.name) if key is not None else None
        source = _KeyRangeDatasource(
            self,
            select,
            key_name,
            low,
            high,
            int(rows),
            [sql_to_arrow_type(c.type) for c in reflected.columns],
        )
        return cast(
            Dataset,
            ray.data.read_datasource(
                source,
                override_num_blocks=None if parallelism <= 0 else parallelism,
                num_cpus=num_cpus,
            ),
        )

    def read_query(self, sql: str, *, parallelism: int = -1) -> Dataset:
        self.query(sql, 0)  # a bad query fails here, in the driver
        return cast(
            Dataset, ray.data.read_datasource(_SqlQueryDatasource(self, require_read_only_sql(sql)))
        )

    def table_sink(self, dataset: str, table: str, mode: WriteMode) -> _StagingTablesDatasink:
        ref = self.ref(dataset, table)
        expected: list[str] | None = None
        target_types: dict[str, Any] = {}
        with self._connect() as conn:
            if sa.inspect(conn).has_table(table, schema=dataset):
                if mode is WriteMode.CREATE:
                    raise AlreadyExistsError(
                        f"table {ref} already exists (mode=create)", field="table"
                    )
                columns = self._table(conn, dataset, table).columns
                target_types = {c.name: c.type for c in columns}
                if mode is WriteMode.APPEND:
                    expected = [c.name for c in columns]
        return _StagingTablesDatasink(self, dataset, table, mode, expected, target_types)

    def commit(
        self,
        dataset: str,
        table: str,
        mode: WriteMode,
        schema: pa.Schema | None,
        source: sa.Select[Any] | list[sa.Table],
    ) -> int:
        """In one transaction: create or empty the target as ``mode`` says, then copy
        ``source`` (a query or staging tables) into it. Returns the rows copied."""
        ref = self.ref(dataset, table)
        engine = self.engine()
        try:
            with engine.begin() as conn:
                exists = sa.inspect(conn).has_table(table, schema=dataset)
                if exists and mode is WriteMode.CREATE:
                    raise AlreadyExistsError(
                        f"table {ref} already exists (mode=create)", field="table"
                    )
                sources = source if isinstance(source, list) else [source]
                names = _source_columns(schema, sources)
                target: sa.Table | None = self._table(conn, dataset, table) if exists else None
                if target is not None and mode is WriteMode.APPEND:
                    check_columns(ref, [c.name for c in target.columns], names)
                elif target is not None and mode is WriteMode.OVERWRITE:
                    if sorted(c.name for c in target.columns) == sorted(names):
                        conn.execute(target.delete())
                    else:
                        target.drop(conn)
                        target = None
                if target is None:
                    target = sa.Table(
                        table, sa.MetaData(), *_new_columns(ref, schema, sources), schema=dataset
                    )
                    target.create(conn)
                copied = 0
                for part in sources:
                    select = (
                        sa.select(*(part.c[n] for n in names))
                        if isinstance(part, sa.Table)
                        else part
                    )
                    copied += _insert_from_select(conn, target, names, select)
                for part in sources:
                    if isinstance(part, sa.Table):
                        part.drop(conn)
                return copied
        except DBAPIError as exc:
            raise InvalidArgumentError(
                f"write to {ref} failed in the database, table unchanged: {exc.orig}",
                field="schema",
            ) from exc
        finally:
            engine.dispose()

    def drop_staging(self, dataset: str, prefix: str) -> None:
        engine = self.engine()
        try:
            with engine.begin() as conn:
                for name in sa.inspect(conn).get_table_names(schema=dataset):
                    if name.startswith(prefix):
                        sa.Table(name, sa.MetaData(), schema=dataset).drop(conn)
        except SQLAlchemyError:
            pass  # best effort: staging tables are never read; a later cleanup may drop them
        finally:
            engine.dispose()

    def create_table_as(self, sql: str, dataset: str, table: str, mode: WriteMode) -> WriteResult:
        body = require_read_only_sql(sql)
        with self._connect() as conn:
            try:
                result = conn.exec_driver_sql(
                    _driver_sql(conn, f"SELECT * FROM ({body}) AS q LIMIT 0")
                )
                names = list(result.keys())
                sample = conn.exec_driver_sql(
                    _driver_sql(conn, f"SELECT * FROM ({body}) AS q LIMIT 1000")
                ).all()
            except DBAPIError as exc:
                raise InvalidArgumentError(
                    f"query failed in the database: {exc.orig}", field="sql"
                ) from exc
        schema = _rows_to_arrow(names, list(sample), [None] * len(names)).schema
        select: Any = sa.select(*(sa.column(n) for n in names)).select_from(
            sa.text(_escape_colons(f"({body}) AS q"))
        )
        rows = self.commit(dataset, table, mode, schema, select)
        return WriteResult(table=self.ref(dataset, table), mode=mode, rows_written=rows)


class _EngineConnection:
    """``with warehouse._connect() as conn``: a connection whose engine is disposed after."""

    def __init__(self, warehouse: SqlWarehouse) -> None:
        self.warehouse = warehouse
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        self._engine = self.warehouse.engine()
        try:
            self._conn = self._engine.connect()
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise _unavailable(self.warehouse.name, exc) from exc
        return self._conn

    def __exit__(self, *_exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()


def _new_columns(ref: str, schema: pa.Schema | None, sources: list[Any]) -> list[sa.Column[Any]]:
    """Columns for a new target: from the data's Arrow schema, else the first staging table."""
    if schema is not None:
        return [sa.Column(f.name, arrow_to_sql_type(f)) for f in schema]
    if sources and isinstance(sources[0], sa.Table):
        return [sa.Column(c.name, c.type) for c in sources[0].columns]
    raise InvalidArgumentError(f"nothing was written and table {ref} does not exist", field="table")


def _insert_from_select(
    conn: Connection, target: sa.Table, names: list[str], select: sa.Select[Any]
) -> int:
    """Rows copied by INSERT … SELECT: the driver's rowcount where it reports one (sqlite3
    and psycopg do), else counted before and after (a scan of the target)."""
    insert = target.insert().from_select(names, select)
    if conn.dialect.driver in _EXACT_ROWCOUNT_DRIVERS:
        copied = conn.execute(insert.execution_options(preserve_rowcount=True)).rowcount
        if copied >= 0:
            return int(copied)
    before = _count_rows(conn, target)
    conn.execute(insert)
    return _count_rows(conn, target) - before


def _count_rows(conn: Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _source_columns(schema: pa.Schema | None, sources: list[Any]) -> list[str]:
    if schema is not None:
        return list(schema.names)
    if sources and isinstance(sources[0], sa.Table):
        return [c.name for c in sources[0].columns]
    return []


def _unavailable(name: str, exc: Exception) -> UnavailableError:
    orig = getattr(exc, "orig", None) or exc
    return UnavailableError(f"cannot connect to {name!r}: {str(orig).strip().splitlines()[0]}")


def _integer_key(table: sa.Table) -> sa.Column[Any] | None:
    keys = list(table.primary_key.columns)
    if len(keys) == 1 and isinstance(keys[0].type, sa.Integer):
        return keys[0]
    return None


def _driver_sql(conn: Connection, sql: str) -> str:
    """User SQL sent as-is: drivers with %-placeholders (psycopg) need literal % doubled."""
    if conn.dialect.paramstyle in ("format", "pyformat"):
        return sql.replace("%", "%%")
    return sql


def _escape_colons(sql: str) -> str:
    """User SQL inside ``text()``: a ':name' is a literal, not a bind parameter."""
    return re.sub(r"(?<![:\\]):(?=[A-Za-z_])", r"\\:", sql)


def _read_only_transaction(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")


def _transactional_ddl_for_sqlite(engine: Engine) -> None:
    """pysqlite commits before DDL on its own; let SQLAlchemy's BEGIN cover DDL too."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _stream(
    warehouse: SqlWarehouse, sql: str, types: list[pa.DataType | None] | None
) -> Iterator[Block]:
    """``sql`` through the driver's own cursor, ``ROWS_PER_BLOCK`` rows per Arrow block.

    No SQLAlchemy on this path (no Row objects, no dialect initialization round trips on
    connect): they cost more than the read. Postgres reads through a server-side (named)
    cursor so a task never holds its whole range in memory.
    """
    connection = warehouse.dbapi_connection()
    try:
        if warehouse.dialect_name == "postgresql":
            cursor = connection.cursor(name=f"rd_{new_write_id()}")
        else:
            cursor = connection.cursor()
        cursor.execute(sql)
        names = [d[0] for d in cursor.description]
        column_types = types or [None] * len(names)
        emitted = False
        while rows := cursor.fetchmany(ROWS_PER_BLOCK):
            emitted = True
            yield _rows_to_arrow(names, rows, column_types)
        if not emitted:
            yield _rows_to_arrow(names, [], column_types)
        cursor.close()
    finally:
        connection.close()


class _KeyRangeDatasource(Datasource):
    """Integer primary-key ranges of one table, one task each (or one task without a key)."""

    def __init__(
        self,
        warehouse: SqlWarehouse,
        select: str,
        key: str | None,
        low: int | None,
        high: int | None,
        rows: int,
        types: list[pa.DataType | None],
    ) -> None:
        self.warehouse, self.select, self.types = warehouse, select, types
        self.key, self.low, self.high, self.rows = key, low, high, rows

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        if self.key is None or self.low is None or self.high is None:
            return [self._task(self.select)]
        tasks = max(1, min(parallelism, math.ceil(self.rows / MIN_ROWS_PER_READ_TASK)))
        span = self.high - self.low + 1
        bounds = [self.low + span * i // tasks for i in range(tasks + 1)]
        return [
            self._task(
                f"{self.select} WHERE {self.key} >= {int(bounds[i])} "
                f"AND {self.key} < {int(bounds[i + 1])}"
            )
            for i in range(tasks)
        ]

    def _task(self, sql: str) -> ReadTask:
        warehouse, types = self.warehouse, self.types
        return ReadTask(
            lambda: _stream(warehouse, sql, types), BlockMetadata(None, None, None, None)
        )


class _SqlQueryDatasource(Datasource):
    def __init__(self, warehouse: SqlWarehouse, sql: str) -> None:
        self.warehouse, self.sql = warehouse, sql

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        warehouse, sql = self.warehouse, self.sql
        return [
            ReadTask(lambda: _stream(warehouse, sql, None), BlockMetadata(None, None, None, None))
        ]


class _StagingTablesDatasink(TableDatasink[dict[str, Any] | None]):
    def __init__(
        self,
        warehouse: SqlWarehouse,
        dataset: str,
        table: str,
        mode: WriteMode,
        expected: list[str] | None,
        target_types: dict[str, Any],
    ) -> None:
        self.warehouse, self.dataset, self.table, self.mode = warehouse, dataset, table, mode
        self.expected = expected
        # Staging columns take the target's types where it has the column, so a block whose
        # column is all NULL (Arrow type null) still copies into a typed column.
        self.target_types = target_types
        self.prefix = f"{STAGE_PREFIX}{new_write_id()}_"
        self.schema: pa.Schema | None = None
        self.rows_written = 0

    @property
    def ref(self) -> str:
        return self.warehouse.ref(self.dataset, self.table)

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        # The schema *before* maps fused into the write tasks: a fallback for empty writes
        # only; the staging tables hold what the tasks actually wrote.
        self.schema = schema

    def write(self, blocks: Any, ctx: Any) -> dict[str, Any] | None:
        engine = self.warehouse.engine()
        stage: sa.Table | None = None
        rows = 0
        try:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if stage is None:
                    if self.expected is not None:
                        check_columns(self.ref, self.expected, table.schema.names)
                    columns = [
                        sa.Column(f.name, self.target_types.get(f.name) or arrow_to_sql_type(f))
                        for f in table.schema
                    ]
                    stage = sa.Table(
                        f"{self.prefix}{ctx.task_idx}", sa.MetaData(), *columns, schema=self.dataset
                    )
                    with engine.begin() as conn:
                        stage.create(conn)
                with engine.begin() as conn:  # one commit per block: staging streams
                    bulk_insert(conn, stage, table)
                rows += table.num_rows
        except DBAPIError as exc:
            raise InvalidArgumentError(
                f"staging rows for {self.ref} failed: {exc.orig}", field="schema"
            ) from exc
        finally:
            engine.dispose()
        return None if stage is None else {"table": stage.name, "rows": rows}

    def on_write_complete(self, write_result: RayWriteResult[dict[str, Any] | None]) -> None:
        staged = [r for r in write_result.write_returns if r is not None]
        stages = [sa.Table(r["table"], sa.MetaData(), schema=self.dataset) for r in staged]
        schema = None if stages else self.schema
        try:
            if stages:
                engine = self.warehouse.engine()
                try:
                    with engine.connect() as conn:
                        stages = [self.warehouse._table(conn, self.dataset, s.name) for s in stages]
                finally:
                    engine.dispose()
            self.warehouse.commit(self.dataset, self.table, self.mode, schema, stages)
        finally:
            self.warehouse.drop_staging(self.dataset, self.prefix)
        self.rows_written = sum(int(r["rows"]) for r in staged)

    def on_write_failed(self, error: Exception) -> None:
        self.warehouse.drop_staging(self.dataset, self.prefix)
