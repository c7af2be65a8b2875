"""Files of a batch prediction: input expansion, format inference, output directory checks.

Shared by the server (validating a request before anything is stored) and the Ray job
(reading and writing). Paths are absolute local paths or fsspec URIs; nothing here imports
Ray, so the server stays light.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath
from typing import Any

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.batch_predictions import BatchInputFormat
from raydeck.runtime.artifacts import filesystem, is_local, join_uri, local_path

__all__ = [
    "ERROR_MARKER",
    "PROGRESS_FILE",
    "SUMMARY_FILE",
    "csv_header",
    "expand_input_uris",
    "file_columns",
    "infer_format",
    "is_absolute",
    "join_uri",
    "output_conflict",
    "read_json_file",
    "write_json_file",
]

SUMMARY_FILE = "_summary.json"
PROGRESS_FILE = "_progress.json"
# The runtime's last line on failure: "<marker><one-line reason>" (the reconciler looks for it).
ERROR_MARKER = "raydeck-batch-predict error: "

_GLOB_CHARS = frozenset("*?[")
_EXTENSIONS: dict[str, BatchInputFormat] = {
    ".jsonl": BatchInputFormat.JSONL,
    ".ndjson": BatchInputFormat.JSONL,
    ".json": BatchInputFormat.JSONL,
    ".csv": BatchInputFormat.CSV,
    ".parquet": BatchInputFormat.PARQUET,
    ".pq": BatchInputFormat.PARQUET,
}
_COMPRESSION = (".gz", ".bz2", ".zst", ".lz4", ".snappy")


def is_absolute(uri: str) -> bool:
    return not is_local(uri) or local_path(uri).is_absolute()


def _hidden(relative: str) -> bool:
    """``_SUCCESS``, ``.crc``, ``_temporary/…``: bookkeeping files, not data."""
    return any(part.startswith((".", "_")) for part in PurePosixPath(relative).parts)


def _full(fs: Any, path: str, uri: str) -> str:
    return path if is_local(uri) else str(fs.unstrip_protocol(path))


def _expand_one(uri: str) -> list[str]:
    fs, path = filesystem(uri)
    if any(ch in _GLOB_CHARS for ch in path):
        found = [p for p in fs.glob(path) if not fs.isdir(p)]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if not _hidden(str(p)[len(path) :])]
    elif fs.exists(path):
        found = [path]
    else:
        found = []
    return sorted(_full(fs, str(p), uri) for p in found)


def expand_input_uris(uris: list[str], *, field: str = "input.uris") -> list[str]:
    """Every file the URIs name, in order, without duplicates; 400 for a URI that names none."""
    files: dict[str, None] = {}
    for i, uri in enumerate(uris):
        if not is_absolute(uri):
            raise InvalidArgumentError(
                f"{uri!r} is a relative path; give an absolute path or a URI", field=f"{field}[{i}]"
            )
        try:
            found = _expand_one(uri)
        except (OSError, ValueError, ImportError) as exc:
            raise InvalidArgumentError(
                f"cannot list {uri!r}: {exc}"[:500], field=f"{field}[{i}]"
            ) from exc
        if not found:
            raise InvalidArgumentError(f"{uri!r} matches no file", field=f"{field}[{i}]")
        files.update(dict.fromkeys(found))
    return list(files)


def infer_format(files: list[str]) -> BatchInputFormat:
    name = PurePosixPath(files[0]).name.lower()
    for suffix in _COMPRESSION:
        name = name.removesuffix(suffix)
    fmt = _EXTENSIONS.get(PurePosixPath(name).suffix)
    if fmt is None:
        raise InvalidArgumentError(
            f"cannot tell the format of {files[0]!r} from its name; give input.format "
            "(jsonl, csv or parquet)",
            field="input.format",
        )
    return fmt


def csv_header(uri: str) -> list[str]:
    fs, path = filesystem(uri)
    with fs.open(path, "rb", compression="infer") as handle:
        first = io.TextIOWrapper(handle, encoding="utf-8", newline="").readline()
    return next(csv.reader([first]), [])


def file_columns(uri: str, fmt: BatchInputFormat) -> list[str] | None:
    """Column names of a CSV (its header) or Parquet file (its schema); None for JSONL."""
    if fmt is BatchInputFormat.CSV:
        return csv_header(uri)
    if fmt is BatchInputFormat.PARQUET:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        fs, path = filesystem(uri)
        with fs.open(path, "rb") as handle:
            return list(pq.ParquetFile(handle).schema_arrow.names)
    return None


def output_conflict(uri: str) -> str | None:
    """Why ``uri`` cannot take new results (it holds files, or is a file), else None."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return None
    if not fs.isdir(path):
        return f"{uri!r} is a file, not a directory"
    entries = fs.ls(path, detail=False)
    if entries:
        names = ", ".join(sorted(PurePosixPath(str(e)).name for e in entries)[:3])
        return f"{uri!r} already holds results ({names}…); choose an empty or new directory"
    return None


def read_json_file(uri: str) -> dict[str, Any] | None:
    """A JSON object file, or None when it does not exist (yet) or is half written."""
    try:
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_file(uri: str, data: dict[str, Any]) -> None:
    """Written whole: to a temporary name, then renamed where the filesystem can."""
    fs, path = filesystem(uri)
    text = json.dumps(data, indent=2, default=str).encode()
    if is_local(uri):
        target = local_path(path)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(text)
        partial.replace(target)
        return
    with fs.open(path, "wb") as handle:
        handle.write(text)
