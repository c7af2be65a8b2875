"""The batch prediction runtime on a local Ray: exact counts, per-row errors, output files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import joblib
import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.core.errors import InvalidArgumentError, RaydeckError
from raydeck.core.models.batch_predictions import BatchOutputMode, BatchPredictSpec
from raydeck.core.models.warehouse import ConnectionCreate
from raydeck.runtime.batch_files import PROGRESS_FILE, SUMMARY_FILE
from raydeck.runtime.batch_predict import failure_reason, run
from tests.conftest import Api

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

X, Y = make_classification(n_samples=500, n_features=4, random_state=3)
MODEL = LogisticRegression().fit(X, Y)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    joblib.dump(MODEL, directory / "model.joblib")
    return directory


def _spec(model_dir: Path, inputs: list[Path], out: Path, **changes: Any) -> BatchPredictSpec:
    return BatchPredictSpec.model_validate(
        {
            "job_id": "bpj-test",
            "framework": "sklearn",
            "artifact_uri": str(model_dir),
            "model_version": "m@1",
            "input": {"uris": [str(p) for p in inputs]},
            "output": {"uri": str(out)},
            "batch_size": 64,
            **changes,
        }
    )


def _jsonl_rows(files: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for f in files for line in Path(f).read_text().splitlines()]


def test_jsonl_with_bad_rows_keeps_every_good_prediction(model_dir: Path, tmp_path: Path) -> None:
    good = X[:400]
    lines = [json.dumps(row) for row in good.tolist()]
    bad = {
        "[1.0, 2.0, 3.0]": "this row has 3 features, the model expects 4",
        '[1.0, "n/a", 3.0, 4.0]': "this row, feature 1 is not a number: 'n/a'",
        "[1, 2, 3, 4, 5]": "this row has 5 features, the model expects 4",
        "not json at all": "line is not valid JSON",
    }
    for k, line in enumerate(bad):  # scattered over different batches
        lines.insert(50 + 97 * k, line)
    (tmp_path / "part-1.jsonl").write_text("\n".join(lines[:250]) + "\n")
    (tmp_path / "part-2.jsonl").write_text("\n".join(lines[250:]) + "\n\n")  # blank line: no row
    output = tmp_path / "out"

    summary = run(_spec(model_dir, [tmp_path / "*.jsonl"], output), poll_seconds=0.2)

    assert (summary["rows_total"], summary["rows_succeeded"], summary["rows_failed"]) == (
        404,
        400,
        4,
    )
    assert json.loads((output / SUMMARY_FILE).read_text()) == summary
    progress = json.loads((output / PROGRESS_FILE).read_text())
    assert (progress["rows_total"], progress["rows_failed"], progress["done"]) == (404, 4, True)
    assert summary["output_files"] and all(f.endswith(".jsonl") for f in summary["output_files"])
    rows = _jsonl_rows(summary["output_files"])
    assert len(rows) == 404
    failed = {json.dumps(r["instance"]): r for r in rows if r["error"] is not None}
    for line, message in bad.items():
        key = json.dumps(line) if line.startswith("not") else json.dumps(json.loads(line))
        assert failed[key]["prediction"] is None
        assert failed[key]["error"].startswith(message), failed[key]
    ok = [r for r in rows if r["error"] is None]
    instances = np.array([r["instance"] for r in ok])
    assert sorted(map(tuple, instances.tolist())) == sorted(map(tuple, good.tolist()))
    assert [r["prediction"] for r in ok] == MODEL.predict(instances).tolist()


def test_csv_to_parquet_counts_malformed_lines_and_selects_columns(
    model_dir: Path, tmp_path: Path
) -> None:
    header = "id,f0,f1,f2,f3,note"
    lines = [header] + [
        f"{i},{a},{b},{c},{d},row {i}" for i, (a, b, c, d) in enumerate(X[:300].tolist())
    ]
    lines[10] = "9,1.0,2.0"  # too few fields: pyarrow cannot split it
    lines[20] = "19,1.0,abc,3.0,4.0,x"  # a word in a numeric column
    lines[30] = "29,1.0,,3.0,4.0,x"  # a missing value
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    spec = _spec(
        model_dir,
        [tmp_path / "in.csv"],
        output,
        input={"uris": [str(tmp_path / "in.csv")], "feature_columns": ["f0", "f1", "f2", "f3"]},
        output={"uri": str(output), "format": "parquet"},
        concurrency=1,
    )

    summary = run(spec, rows_per_file=100)

    assert (summary["rows_total"], summary["rows_succeeded"], summary["rows_failed"]) == (
        300,
        297,
        3,
    )
    table = pq.ParquetDataset(summary["output_files"]).read()
    assert table.num_rows == 300
    errors = sorted(e for e in table.column("error").to_pylist() if e)
    assert len(errors) == 3
    assert "this line has 3 fields, the header has 6" in errors
    assert "this row, feature 1 (f1) is not a number: 'abc'" in errors
    # null, or NaN when its batch took the vectorized path: either way the row names it
    missing = [e for e in errors if "abc" not in e and "fields" not in e]
    assert missing[0].startswith(
        ("this row, feature 1 (f1) is null", "this row, feature 1 (f1) is missing")
    )
    ok = [
        (json.loads(i), p)
        for i, p, e in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
        if e is None
    ]
    instances = np.array([i for i, _ in ok])
    assert [p for _, p in ok] == MODEL.predict(instances).tolist()


def test_refuses_an_output_directory_with_results(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("[1, 2, 3, 4]\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.jsonl").write_text("{}\n")
    with pytest.raises(InvalidArgumentError) as caught:
        run(_spec(model_dir, [tmp_path / "in.jsonl"], tmp_path / "out"))
    assert caught.value.field == "output.uri"
    assert (tmp_path / "out" / "old.jsonl").read_text() == "{}\n"


def test_a_model_that_does_not_load_fails_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_text("not a model")
    (tmp_path / "in.jsonl").write_text("[1, 2, 3, 4]\n")
    with pytest.raises(Exception) as caught:
        run(_spec(broken, [tmp_path / "in.jsonl"], tmp_path / "out"))
    reason = failure_reason(caught.value)
    assert reason.startswith("cannot load the sklearn model"), reason
    assert "\n" not in reason


def test_table_in_table_out_with_exact_counts_and_failed_rows(
    model_dir: Path, tmp_path: Path
) -> None:
    """A DuckDB table (2 rows with a NULL feature) → predictions table beside its columns;
    connections resolved through an in-process control plane, as the job does with its token."""
    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE features (id BIGINT, f0 DOUBLE, f1 DOUBLE, f2 DOUBLE, f3 DOUBLE)")
    rows = [(i, *map(float, x)) for i, x in enumerate(X)]
    rows[7] = (7, None, *rows[7][2:])
    rows[300] = (300, *rows[300][1:4], None)
    con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
    # the DuckDB file lies under tmp_path, outside the project's warehouse: an admin allows it
    api = Api(tmp_path / "home", run_reconcilers=False, allowed_roots=str(tmp_path))
    try:
        client = api.sdk()
        client.connections.create(ConnectionCreate(name="wh", kind="duckdb", path=str(path)))
        spec = BatchPredictSpec.model_validate(
            {
                "job_id": "bpj-table",
                "framework": "sklearn",
                "artifact_uri": str(model_dir),
                "model_version": "m@1",
                "input": {"table": "wh.features", "feature_columns": ["f0", "f1", "f2", "f3"]},
                "output": {"table": "wh.scores.predicted", "mode": "create"},
                "status_uri": str(tmp_path / "status"),
                "batch_size": 64,
            }
        )
        summary = run(spec, client=client, poll_seconds=0.1)
        assert (summary["rows_total"], summary["rows_succeeded"], summary["rows_failed"]) == (
            500,
            498,
            2,
        )
        assert summary["output_table"] == "wh.scores.predicted" and summary["output_files"] == []
        assert json.loads((tmp_path / "status" / SUMMARY_FILE).read_text()) == summary
        progress = json.loads((tmp_path / "status" / PROGRESS_FILE).read_text())
        assert (progress["rows_total"], progress["done"]) == (500, True)

        con = duckdb.connect(str(path), read_only=True)
        out = con.execute(
            "SELECT id, prediction, error FROM scores.predicted ORDER BY id"
        ).fetchall()
        columns = [r[0] for r in con.execute("DESCRIBE scores.predicted").fetchall()]
        con.close()
        assert columns == ["id", "f0", "f1", "f2", "f3", "prediction", "error"]
        assert [r[0] for r in out] == list(range(500))
        failed = {r[0] for r in out if r[2] is not None}
        assert failed == {7, 300} and all(out[i][1] is None for i in failed)
        good = [i for i in range(500) if i not in failed]
        assert [out[i][1] for i in good] == MODEL.predict(X[good]).astype(float).tolist()

        # append: the same rows again, the table now holds both runs; create again: refused
        again = spec.model_copy(
            update={"output": spec.output.model_copy(update={"mode": BatchOutputMode.APPEND})}
        )
        assert run(again, client=client)["rows_total"] == 500
        con = duckdb.connect(str(path), read_only=True)
        assert con.execute("SELECT count(*) FROM scores.predicted").fetchall() == [(1000,)]
        con.close()
        with pytest.raises(RaydeckError) as refused:
            run(spec, client=client)
        assert refused.value.code == "already_exists"
    finally:
        api.close()
