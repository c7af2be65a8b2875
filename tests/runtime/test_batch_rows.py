"""Batch rows without Ray: instances from JSONL/tables, bisecting around bad rows, output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.runtime.batch_rows import (
    output_table,
    predict_rows,
    rows_from_lines,
    rows_from_table,
)
from raydeck.runtime.predictors import Predictor, load_predictor

X, Y = make_classification(n_samples=80, n_features=4, random_state=1)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    directory: Path = tmp_path_factory.mktemp("model")
    joblib.dump(LogisticRegression().fit(X, Y), directory / "model.joblib")
    return load_predictor("sklearn", directory)


class CountingPredictor(Predictor):
    """Fails any call that contains a negative first feature; counts calls."""

    framework = "custom"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def load(self, artifact_dir: Path) -> None:  # pragma: no cover - not loaded from disk
        pass

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None = None) -> Any:
        self.calls += 1
        if any(row[0] < 0 for row in instances):
            raise ValueError("negative first feature")
        return [row[0] * 2 for row in instances]


def test_good_rows_keep_predictions_and_bad_rows_get_their_own_error(
    predictor: Predictor,
) -> None:
    lines = [json.dumps(r) for r in X[:20].tolist()]
    lines[3] = "[1, 2, 3]"
    lines[7] = '[1, "x", 3, 4]'
    lines[11] = "{oops"
    lines[15] = "[1, null, 3, 4]"
    rows = rows_from_lines(lines)
    predictions = predict_rows(predictor, rows, None)
    expected = LogisticRegression().fit(X, Y).predict(X[:20]).tolist()
    bad = {3, 7, 11, 15}
    for i in range(20):
        if i in bad:
            assert predictions[i] is None and rows.errors[i], i
        else:
            assert (predictions[i], rows.errors[i]) == (expected[i], None), i
    assert rows.errors[3] == "this row has 3 features, the model expects 4"
    assert rows.errors[7] == "this row, feature 1 is not a number: 'x'"
    assert rows.errors[11] is not None and rows.errors[11].startswith("line is not valid JSON")
    assert rows.errors[15] is not None and "feature 1 is null" in rows.errors[15]
    assert rows.texts[3] == "[1, 2, 3]" and rows.texts[11] == '"{oops"'


def test_bisection_calls_the_model_about_log_n_times_per_bad_row() -> None:
    values = [[float(i), 0.0] for i in range(256)]
    values[100][0] = -1.0
    rows = rows_from_lines([json.dumps(v) for v in values])
    model = CountingPredictor()
    predictions = predict_rows(model, rows)
    assert rows.errors[100] == "ValueError: negative first feature"
    assert sum(e is not None for e in rows.errors) == 1
    assert predictions[:3] == [0.0, 2.0, 4.0] and predictions[100] is None
    assert model.calls <= 2 * 8 + 1  # one path down the halving tree, plus siblings


def test_json_objects_use_feature_columns_or_model_names(predictor: Predictor) -> None:
    rows = rows_from_lines(
        ['{"b": 2, "a": 1}', '{"a": 1}', "[5, 6]"], columns=["a", "b"], feature_names=None
    )
    assert rows.instances[0] == [1, 2] and rows.errors[0] is None
    assert rows.errors[1] == "lacks feature column 'b'"
    assert rows.instances[2] == [5, 6]
    named = rows_from_lines(['{"b": 2, "a": 1}'], feature_names=["a", "b"])
    assert named.instances[0] == {"b": 2, "a": 1}  # the predictor orders named features
    plain = rows_from_lines(['{"b": 2, "a": 1}'])
    assert plain.instances[0] == [2, 1]


def test_tables_take_a_vectorized_path_and_fall_back_per_row(predictor: Predictor) -> None:
    text = pa.table({c: [str(v) for v in X[:6, j]] for j, c in enumerate("abcd")})
    rows = rows_from_table(text, list("abcd"))
    assert isinstance(rows.instances, np.ndarray) and rows.instances.shape == (6, 4)
    assert json.loads(rows.texts[0]) == pytest.approx(X[0].tolist())
    mixed = text.set_column(1, "b", pa.array(["1.5", "abc", None, "2", "3", "4"]))
    rows = rows_from_table(mixed, list("abcd"))
    predictions = predict_rows(predictor, rows, None, columns=list("abcd"))
    assert rows.errors[1] == "this row, feature 1 (b) is not a number: 'abc'"
    assert rows.errors[2] is not None and "feature 1 (b) is null" in rows.errors[2]
    assert [p is None for p in predictions] == [False, True, True, False, False, False]
    vectors = pa.table({"features": pa.array(X[:3].tolist())})
    rows = rows_from_table(vectors, ["features"])
    assert rows.instances == X[:3].tolist()


def test_output_table_keeps_types_and_tolerates_mixed_predictions() -> None:
    rows = rows_from_lines(["[1]", "[2]", "[3]"])
    rows.errors[1] = "bad"
    table = output_table(rows, [1, None, 3])
    assert table.column_names == ["instance", "prediction", "error"]
    assert table.column("prediction").type == pa.int64()
    assert table.column("error").to_pylist() == [None, "bad", None]
    mixed = output_table(rows, [1, None, "x"])
    assert mixed.column("prediction").to_pylist() == ["1", None, '"x"']
