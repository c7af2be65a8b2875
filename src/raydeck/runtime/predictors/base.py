"""The ``Predictor`` interface and the input checks every framework shares.

Predictors run inside Serve replicas and Ray Data workers: ``load`` once, then ``predict`` on
whole batches. Bad input raises ``InvalidArgumentError`` naming the instance and feature, so
an endpoint can answer 400 with a message a caller can act on.
"""

from __future__ import annotations

import numbers
import pickle
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import numpy.typing as npt

from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError

__all__ = [
    "BASELINE_KEY",
    "Explanation",
    "Predictor",
    "contribution_explanations",
    "first_line",
    "load_pickled",
]

# Key of the part of an attribution that belongs to no feature (intercept / tree bias); all
# values of one explanation add up to the model's raw output (margin / decision function).
BASELINE_KEY = "_baseline"

Explanation = dict[str, float] | list[float]

_NUMERIC_KINDS = frozenset("biuf")


def first_line(exc: BaseException) -> str:
    """One readable line from a framework error (drops C++ timestamps and stack traces)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)


def load_pickled(path: Path) -> Any:
    """A model saved with joblib (``*.joblib``) or plain pickle (any other name)."""
    if path.suffix == ".joblib":
        return joblib.load(path)
    with path.open("rb") as handle:
        return pickle.load(handle)


def contribution_explanations(
    contributions: npt.NDArray[Any], names: list[str]
) -> list[Explanation]:
    """Per-feature contributions with the bias last, as tree libraries compute them: rows of
    ``(features + 1)``, or ``(classes, features + 1)`` per row, of which the top class's."""
    if contributions.ndim == 3:
        top = np.argmax(contributions.sum(axis=2), axis=1)
        contributions = contributions[np.arange(len(contributions)), top]
    return [
        {**dict(zip(names, row[:-1].tolist(), strict=True)), BASELINE_KEY: float(row[-1])}
        for row in contributions
    ]


class Predictor(ABC):
    """Loads one model artifact directory and predicts on lists of instances.

    Subclasses set ``framework`` and ``artifact_files`` (the model file: the first of these
    names found in the directory is used) and fill ``input_shape`` / ``feature_names`` in
    ``load`` when the model knows them, which turns on the shape checks in ``to_array``.
    """

    framework: ClassVar[str] = ""
    artifact_files: ClassVar[tuple[str, ...]] = ()
    parameter_names: ClassVar[frozenset[str]] = frozenset()
    accepts_missing: ClassVar[bool] = False  # null/NaN features allowed (boosted trees)

    def __init__(self) -> None:
        self.input_shape: tuple[int, ...] | None = None  # shape of one instance
        self.feature_names: list[str] | None = None

    @classmethod
    def artifact_file(cls, artifact_dir: Path) -> Path:
        for name in cls.artifact_files:
            if (artifact_dir / name).is_file():
                return artifact_dir / name
        found = sorted(p.name for p in artifact_dir.iterdir())[:10] if artifact_dir.is_dir() else []
        raise InvalidArgumentError(
            f"a {cls.framework} model needs one of {', '.join(cls.artifact_files)} in its "
            f"artifact directory (found: {', '.join(found) or 'nothing'})",
            field="artifact_uri",
        )

    @abstractmethod
    def load(self, artifact_dir: Path) -> None:
        """Read the model from ``artifact_dir``; raise on anything unusable."""

    @abstractmethod
    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        """One prediction per instance, in order, computed in one vectorized call."""

    def explain(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Explanation]:
        """Per-feature attributions per instance; values (with ``_baseline``) sum to the margin."""
        raise FailedPreconditionError(
            f"this {self.framework} model does not support explain "
            "(supported: linear scikit-learn models, XGBoost, LightGBM)",
            field="model",
        )

    @property
    def n_features(self) -> int | None:
        if self.input_shape is not None and len(self.input_shape) == 1:
            return self.input_shape[0]
        return None

    def names(self, count: int) -> list[str]:
        if self.feature_names and len(self.feature_names) == count:
            return list(self.feature_names)
        return [f"f{i}" for i in range(count)]

    def check_parameters(self, parameters: dict[str, Any] | None) -> dict[str, Any]:
        if parameters is None:
            return {}
        if not isinstance(parameters, dict):
            raise InvalidArgumentError("parameters must be an object", field="parameters")
        unknown = sorted(set(parameters) - self.parameter_names)
        if unknown:
            known = ", ".join(sorted(self.parameter_names)) or "none"
            raise InvalidArgumentError(
                f"unknown parameter {unknown[0]!r} for a {self.framework} model (known: {known})",
                field=f"parameters.{unknown[0]}",
            )
        return dict(parameters)

    @staticmethod
    def flag(parameters: dict[str, Any], name: str) -> bool:
        value = parameters.get(name, False)
        if not isinstance(value, bool):
            raise InvalidArgumentError(
                f"parameter {name!r} must be true or false", field=f"parameters.{name}"
            )
        return value

    def to_array(
        self, instances: Sequence[Any] | npt.NDArray[Any], dtype: type = np.float64
    ) -> npt.NDArray[Any]:
        """Validated numeric array of shape (n, *input_shape).

        Fast path: one ``np.asarray`` for well-formed input; only when that fails or yields a
        non-numeric dtype are instances walked one by one to name the offending value.
        """
        if isinstance(instances, np.ndarray):
            array = instances
            if array.dtype.kind not in _NUMERIC_KINDS:
                raise InvalidArgumentError(
                    "instances contain non-numeric values", field="instances"
                )
        else:
            if not isinstance(instances, list | tuple):
                raise InvalidArgumentError("instances must be a list", field="instances")
            fast = self._fast_array(instances)
            array = fast if fast is not None else self._checked_array(instances)
        if array.shape[0] == 0:
            raise InvalidArgumentError("instances must not be empty", field="instances")
        if array.ndim < 2:
            raise InvalidArgumentError(
                f"instance 0 must be a list of numbers, got {array.flat[0].item()!r}",
                field="instances[0]",
            )
        self._check_shape(array)
        if not self.accepts_missing and array.dtype.kind == "f":
            missing = np.argwhere(np.isnan(array))
            if len(missing):
                row, column = int(missing[0][0]), int(missing[0][1])
                raise InvalidArgumentError(
                    f"instance {row}, feature {column} is missing (NaN); this model needs a "
                    "value for every feature",
                    field=f"instances[{row}]",
                )
        return array.astype(dtype, copy=False)

    @staticmethod
    def _fast_array(instances: Sequence[Any]) -> npt.NDArray[Any] | None:
        try:
            array = np.asarray(instances)
        except (ValueError, TypeError):  # ragged rows
            return None
        return array if array.dtype.kind in _NUMERIC_KINDS else None

    def _check_shape(self, array: npt.NDArray[Any]) -> None:
        expected = self.input_shape
        if expected is None or tuple(array.shape[1:]) == tuple(expected):
            return
        if len(expected) == 1 and array.ndim == 2:
            raise InvalidArgumentError(
                f"instance 0 has {array.shape[1]} features, the model expects {expected[0]}",
                field="instances[0]",
            )
        raise InvalidArgumentError(
            f"instances have shape {tuple(array.shape[1:])}, the model expects {tuple(expected)}",
            field="instances",
        )

    def _checked_array(self, instances: Sequence[Any]) -> npt.NDArray[Any]:
        if not instances:
            raise InvalidArgumentError("instances must not be empty", field="instances")
        width = self.n_features
        rows: list[list[Any]] = []
        for i, instance in enumerate(instances):
            row = self._row(i, instance)
            if width is not None and len(row) != width:
                raise InvalidArgumentError(
                    f"instance {i} has {len(row)} features, the model expects {width}",
                    field=f"instances[{i}]",
                )
            if rows and len(row) != len(rows[0]):
                raise InvalidArgumentError(
                    f"instance {i} has {len(row)} features, instance 0 has {len(rows[0])}",
                    field=f"instances[{i}]",
                )
            rows.append(row)
        try:
            return np.asarray(rows, dtype=np.float64)
        except (ValueError, TypeError) as exc:  # nested (multi-dimensional) values
            raise InvalidArgumentError(
                f"instances are not a numeric array: {first_line(exc)}", field="instances"
            ) from exc

    def _row(self, i: int, instance: Any) -> list[Any]:
        if isinstance(instance, dict):
            row = self._row_from_mapping(i, instance)
        elif isinstance(instance, list | tuple):
            row = list(instance)
        else:
            raise InvalidArgumentError(
                f"instance {i} must be a list of numbers, got {instance!r}"[:300],
                field=f"instances[{i}]",
            )
        for j, value in enumerate(row):
            if value is None:
                if not self.accepts_missing:
                    raise InvalidArgumentError(
                        f"instance {i}, feature {j} is null; this model needs a value for "
                        "every feature",
                        field=f"instances[{i}]",
                    )
                row[j] = float("nan")
            elif not isinstance(value, numbers.Real | list):
                raise InvalidArgumentError(
                    f"instance {i}, feature {j} is not a number: {value!r}"[:300],
                    field=f"instances[{i}]",
                )
        return row

    def _row_from_mapping(self, i: int, instance: dict[str, Any]) -> list[Any]:
        names = self.feature_names
        if not names:
            raise InvalidArgumentError(
                f"instance {i} is an object, but this model has no feature names; "
                "send a list of numbers",
                field=f"instances[{i}]",
            )
        missing = [n for n in names if n not in instance]
        unknown = [k for k in instance if k not in set(names)]
        if missing or unknown:
            problem = (
                f"lacks feature {missing[0]!r}"
                if missing
                else f"has unknown feature {unknown[0]!r}"
            )
            raise InvalidArgumentError(
                f"instance {i} {problem} (the model expects {', '.join(names)})"[:500],
                field=f"instances[{i}]",
            )
        return [instance[n] for n in names]
