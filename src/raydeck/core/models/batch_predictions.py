"""BatchPredictionJob: a model version run over files or a warehouse table with Ray Data.

Input is either files (``{"uris": [...]}``) or a table (``{"table": "conn.dataset.table"}``,
a connection of the warehouse registry); output is either a directory (``{"uri": ...}``) or
a table (``{"table": "conn.dataset.table", "mode": "create" | "append"}``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.common import LenientModel, StrictModel
from raydeck.core.models.limits import Cpus, Gpus, capped
from raydeck.core.models.warehouse import TableRef, WriteMode

__all__ = [
    "TERMINAL_BATCH_STATES",
    "BatchInput",
    "BatchInputFormat",
    "BatchInputRecord",
    "BatchOutput",
    "BatchOutputFormat",
    "BatchOutputMode",
    "BatchOutputRecord",
    "BatchPredictSpec",
    "BatchPredictionCounts",
    "BatchPredictionJob",
    "BatchPredictionJobCreate",
    "BatchPredictionState",
    "BatchResources",
    "BatchResourcesRecord",
]

Uri = Annotated[str, Field(min_length=1, max_length=4096)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
TableName = Annotated[str, Field(min_length=3, max_length=512)]
# Columns a table output adds next to the input table's own columns.
PREDICTION_COLUMNS = ("prediction", "error")


class BatchPredictionState(StrEnum):
    QUEUED = "QUEUED"  # stored; the reconciler has not submitted the Ray job yet
    PENDING = "PENDING"  # the Ray job is submitted and waiting to start
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL_BATCH_STATES = frozenset(
    {BatchPredictionState.SUCCEEDED, BatchPredictionState.FAILED, BatchPredictionState.CANCELLED}
)


class BatchInputFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


class BatchOutputFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


class BatchOutputMode(StrEnum):
    """How predictions go into an output table (files outputs always need a new directory)."""

    CREATE = "create"  # a new table; refused when it exists
    APPEND = "append"  # add rows (the table is created when missing)

    @property
    def write_mode(self) -> WriteMode:
        return WriteMode(self.value)


def _table_ref(value: str | None, field: str) -> str | None:
    """``conn.dataset.table`` or ``conn.table``; the error names the field."""
    if value is None:
        return None
    try:
        TableRef.parse(value, field=field)
    except InvalidArgumentError as exc:
        raise ValueError(exc.message) from None
    return value


def _unique(values: list[str] | None) -> list[str] | None:
    if values is not None:
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"must be unique: {', '.join(duplicates)} given twice")
    return values


class BatchInput(StrictModel):
    """What to predict on: files (``uris``) or one warehouse table (``table``), not both.

    ``uris`` are absolute paths, directories, globs or fsspec URIs. JSONL: one instance per
    line (a JSON array of features, or an object). CSV/Parquet and tables: one instance per
    row, made of ``feature_columns`` (default: the model's named features when the data has
    them all, else every column in order).
    """

    uris: Annotated[list[Uri], Field(min_length=1, max_length=1000)] | None = None
    table: TableName | None = Field(
        default=None, description="conn.dataset.table (or conn.table) of a registered connection"
    )
    format: BatchInputFormat | None = None  # files only; default: from the first file's name
    feature_columns: Annotated[list[ColumnName], Field(min_length=1, max_length=10000)] | None = (
        None
    )

    @field_validator("feature_columns")
    @classmethod
    def _unique_columns(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value)

    @field_validator("table")
    @classmethod
    def _valid_table(cls, value: str | None) -> str | None:
        return _table_ref(value, "input.table")

    @model_validator(mode="after")
    def _files_or_table(self) -> BatchInput:
        if (self.uris is None) == (self.table is None):
            raise ValueError("give either uris (files) or table, exactly one of them")
        if self.table is not None and self.format is not None:
            raise ValueError("format is for files; a table's columns carry their types")
        return self


class BatchOutput(StrictModel):
    """Where predictions go: a directory (``uri``, path or fsspec URI, that must not hold
    results yet) or a warehouse table (``table`` with ``mode``), not both.

    A table gets one row per input row: the input table's columns (for a table input; the
    ``instance`` as JSON text for files) plus ``prediction`` and ``error``.
    """

    uri: Uri | None = None
    format: BatchOutputFormat = BatchOutputFormat.JSONL  # files only
    table: TableName | None = Field(
        default=None, description="conn.dataset.table (or conn.table) of a registered connection"
    )
    mode: BatchOutputMode = BatchOutputMode.CREATE  # table only

    @field_validator("table")
    @classmethod
    def _valid_table(cls, value: str | None) -> str | None:
        return _table_ref(value, "output.table")

    @model_validator(mode="after")
    def _files_or_table(self) -> BatchOutput:
        if (self.uri is None) == (self.table is None):
            raise ValueError("give either uri (a directory) or table, exactly one of them")
        return self


class BatchResources(StrictModel):
    """Per model replica (one Ray Data actor)."""

    num_cpus: Cpus = 1
    num_gpus: Gpus = 0


class BatchPredictionJobCreate(StrictModel):
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)]  # m, m@3, m@alias or mv-…
    cluster: Annotated[str, Field(min_length=1, max_length=64)]
    input: BatchInput
    output: BatchOutput
    batch_size: Annotated[int, Field(ge=1), capped("max_batch_rows")] = 256
    resources: BatchResources = Field(default_factory=BatchResources)
    concurrency: Annotated[int, Field(ge=1), capped("max_batch_concurrency")] = 1  # replicas
    parameters: dict[str, Any] | None = None  # passed to every predict call


class BatchInputRecord(BatchInput):
    """``BatchInput`` as stored and returned (lenient: newer servers may add fields)."""

    model_config = LenientModel.model_config


class BatchOutputRecord(BatchOutput):
    model_config = LenientModel.model_config


class BatchResourcesRecord(BatchResources):
    model_config = LenientModel.model_config


class BatchPredictionCounts(LenientModel):
    rows_total: int = 0
    rows_succeeded: int = 0
    rows_failed: int = 0


class BatchPredictionJob(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    model: str  # as given
    model_version_id: str  # the global version id it resolved to (mv-…)
    model_version: str  # model@version_id
    framework: str
    cluster: str
    input: BatchInputRecord
    output: BatchOutputRecord
    batch_size: int
    resources: BatchResourcesRecord
    concurrency: int
    parameters: dict[str, Any] | None = None
    state: BatchPredictionState
    state_reason: str | None = None
    counts: BatchPredictionCounts = Field(default_factory=BatchPredictionCounts)
    output_files: list[str] = Field(default_factory=list)
    submission_id: str  # the Ray job's submission id on the cluster
    job_id: str | None = None  # the Raydeck Job record of that Ray job, once submitted
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    updated_at: datetime


class BatchPredictSpec(LenientModel):
    """What the server hands ``python -m raydeck.runtime.batch_predict --spec``."""

    job_id: str
    framework: str
    artifact_uri: str
    model_version: str = ""
    input: BatchInputRecord
    output: BatchOutputRecord
    # Where _progress.json and _summary.json go: the output directory, or for a table output
    # a directory in the artifact store the control plane reads.
    status_uri: str = ""
    batch_size: int = 256
    num_cpus: float = 1
    num_gpus: float = 0
    concurrency: int = 1
    parameters: dict[str, Any] | None = None

    @property
    def status_directory(self) -> str:
        return self.status_uri or self.output.uri or ""
