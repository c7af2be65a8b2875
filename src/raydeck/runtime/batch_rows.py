"""Rows of one batch: input batch → instances → predictions with per-row errors → output.

A batch is predicted in one vectorized call. When that call raises, the batch is split in
halves until the failing rows are isolated (about 2·k·log2(n) calls for k bad rows), so good
rows keep their predictions and each bad row gets its own error text — never a lost batch.

Output columns: ``instance`` (the row as the model saw it, as JSON text), ``prediction``
(null for failed rows) and ``error`` (null for good rows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from raydeck.core.errors import RaydeckError
from raydeck.runtime.predictors import Predictor
from raydeck.runtime.predictors.base import first_line

__all__ = [
    "Rows",
    "output_table",
    "predict_rows",
    "row_error",
    "rows_from_lines",
    "rows_from_table",
]

_MAX_ERROR = 1000
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


@dataclass
class Rows:
    """One entry per input row. ``instances[i]`` is only meaningful where ``errors[i]`` is
    None; rows that could not even be read carry their reason in ``errors`` from the start."""

    instances: list[Any] | npt.NDArray[Any]
    texts: list[str]
    errors: list[str | None]

    def __len__(self) -> int:
        return len(self.texts)


# ---- input -----------------------------------------------------------------------------------


def _json_rows(x: npt.NDArray[Any]) -> list[str]:
    """Each row of a 2-D numeric array as JSON text, from one C-level ``json.dumps``."""
    if len(x) == 0:
        return []
    if np.isnan(x).any():  # NaN is not JSON: write null
        return [json.dumps([None if v != v else v for v in row]) for row in x.tolist()]
    inner = json.dumps(x.tolist())[2:-2]  # "[[1.0, 2.0], [3.0, 4.0]]" → "1.0, 2.0], [3.0, 4.0"
    return [f"[{part}]" for part in inner.split("], [")]


def _numeric(column: pa.ChunkedArray) -> npt.NDArray[np.float64]:
    """float64 values of a numeric or numeric-text column (nulls → NaN); raises otherwise."""
    kind = column.type
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        raise pa.ArrowTypeError(f"column of type {kind} is not numeric")
    values: npt.NDArray[np.float64] = pc.cast(column, pa.float64()).to_numpy()
    return values


def _maybe_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_list_type(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or isinstance(kind, pa.ExtensionType)  # Ray's tensor columns
    )


def rows_from_table(table: pa.Table, columns: Sequence[str]) -> Rows:
    """CSV/Parquet rows: the instance is the values of ``columns``, in that order.

    One column holding lists (a feature vector per row) is that list. Numbers and numeric
    text become floats in one vectorized cast; only a batch where that fails is walked row
    by row, keeping values that are not numbers for the model to reject (or accept).
    """
    n = table.num_rows
    if len(columns) == 1 and _is_list_type(table.column(columns[0]).type):
        values = table.column(columns[0]).to_pylist()
        return Rows(values, [json.dumps(v, default=str) for v in values], [None] * n)
    try:
        x = np.column_stack([_numeric(table.column(c)) for c in columns]) if n else None
    except _ARROW_ERRORS:
        x = None
    if x is not None:
        return Rows(x, _json_rows(x), [None] * n)
    rows = [
        [_maybe_number(v) for v in row]
        for row in zip(*(table.column(c).to_pylist() for c in columns), strict=True)
    ]
    return Rows(rows, [json.dumps(r, default=str) for r in rows], [None] * n)


def _from_json(
    value: Any, columns: Sequence[str] | None, feature_names: Sequence[str] | None
) -> tuple[Any, str | None]:
    if not isinstance(value, dict):
        return value, None  # a feature list, or whatever a custom predictor takes
    if columns:
        missing = [c for c in columns if c not in value]
        if missing:
            return None, f"lacks feature column {missing[0]!r}"
        return [value[c] for c in columns], None
    if feature_names:
        return value, None  # the predictor orders (and checks) named features itself
    return list(value.values()), None


def rows_from_lines(
    lines: Sequence[str],
    columns: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Rows:
    """JSONL rows: each line is one instance (a JSON array, or an object of features)."""
    instances: list[Any] = []
    texts: list[str] = []
    errors: list[str | None] = []
    for line in lines:
        text = line.strip()
        try:
            value = json.loads(text)
        except ValueError as exc:
            instances.append(None)
            texts.append(json.dumps(text))  # the raw line, as a JSON string
            errors.append(f"line is not valid JSON: {exc}"[:_MAX_ERROR])
            continue
        instance, error = _from_json(value, columns, feature_names)
        instances.append(instance)
        texts.append(text)
        errors.append(error)
    return Rows(instances, texts, errors)


# ---- predict ---------------------------------------------------------------------------------


def row_error(exc: BaseException, columns: Sequence[str] | None = None) -> str:
    """One line about one row: the predictor's message with "instance 0" made "this row"."""
    if isinstance(exc, RaydeckError):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {first_line(exc)}"
    text = re.sub(r"\binstance 0\b", "this row", text)
    if columns:

        def named(match: re.Match[str]) -> str:
            j = int(match.group(1))
            return f"{match.group(0)} ({columns[j]})" if j < len(columns) else match.group(0)

        text = re.sub(r"\bfeature (\d+)\b", named, text, count=1)
    return text[:_MAX_ERROR]


def predict_rows(
    predictor: Predictor,
    rows: Rows,
    parameters: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
) -> list[Any]:
    """One prediction per row (None where it failed); failures are written to ``rows.errors``."""
    predictions: list[Any] = [None] * len(rows)
    ok = [i for i, error in enumerate(rows.errors) if error is None]
    if not ok:
        return predictions
    batch: Any
    if isinstance(rows.instances, np.ndarray) and len(ok) == len(rows):
        batch = rows.instances
    else:
        batch = [rows.instances[i] for i in ok]

    def solve(lo: int, hi: int) -> None:
        try:
            out = list(predictor.predict(batch[lo:hi], parameters))
            if len(out) != hi - lo:
                raise ValueError(f"the model returned {len(out)} predictions for {hi - lo} rows")
        except Exception as exc:
            if hi - lo == 1:
                rows.errors[ok[lo]] = row_error(exc, columns)
                return
            mid = (lo + hi) // 2
            solve(lo, mid)
            solve(mid, hi)
            return
        for k, value in enumerate(out):
            predictions[ok[lo + k]] = value

    solve(0, len(ok))
    return predictions


# ---- output ----------------------------------------------------------------------------------


def _prediction_array(predictions: list[Any]) -> pa.Array:
    try:
        return pa.array(predictions)
    except _ARROW_ERRORS:  # values of mixed kinds: keep them, as JSON text
        return pa.array(
            [None if p is None else json.dumps(p, default=str) for p in predictions], pa.string()
        )


def output_table(rows: Rows, predictions: list[Any]) -> pa.Table:
    return pa.table(
        {
            "instance": pa.array(rows.texts, pa.string()),
            "prediction": _prediction_array(predictions),
            "error": pa.array(rows.errors, pa.string()),
        }
    )
