"""Files read into one Arrow table for ``raydeck data load`` (the control plane then writes
it with the warehouse's own staged write path, ``Warehouse.write_arrow``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.json as pajson  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.warehouse import LoadFormat

__all__ = ["read_load_file"]


def read_load_file(path: Path, fmt: LoadFormat) -> pa.Table:
    """CSV (header row, types inferred), Parquet, or JSON lines (one object per line);
    a file that does not parse is a 400 naming ``file``."""
    try:
        if fmt is LoadFormat.CSV:
            table = pacsv.read_csv(path)
        elif fmt is LoadFormat.PARQUET:
            table = pq.read_table(path)
        else:
            table = pajson.read_json(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        text = " ".join(str(exc).split()).replace(f"'{path}'", "the file").replace(str(path), "")
        first = text or type(exc).__name__
        raise InvalidArgumentError(
            f"cannot read the file as {fmt.value}: {first}"[:500], field="file"
        ) from exc
    if table.num_columns == 0:
        raise InvalidArgumentError("the file has no columns", field="file")
    return table
