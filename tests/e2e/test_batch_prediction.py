"""Batch prediction on real Ray through a real server: register → create → SUCCEEDED with exact
counts and the model's own predictions in the output files, across a server kill -9; a job
whose input vanished fails with a one-line reason; cancel; logs; a DuckDB table in and a
predictions table out over the CLI (the job resolves the connection with its own token)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.client import RaydeckClient
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models import JobState
from raydeck.core.models.batch_predictions import BatchPredictionState
from raydeck.core.models.warehouse import ConnectionCreate
from tests.cli.test_cli import assert_one_line_error, raydeck
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS = 2000
FEATURES = ["f0", "f1", "f2", "f3"]
X, Y = make_classification(n_samples=ROWS, n_features=4, random_state=7)
MODEL = LogisticRegression().fit(X, Y)


@pytest.fixture(scope="module")
def model(live_client: RaydeckClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("model")
    joblib.dump(MODEL, directory / "model.joblib")
    live_client.models.upload("batch-churn", directory, "sklearn")
    return "batch-churn@default"


@pytest.fixture
def csv_input(cluster_tmp: Path) -> Path:
    lines = ["id,f0,f1,f2,f3"] + [
        f"{i},{a!r},{b!r},{c!r},{d!r}" for i, (a, b, c, d) in enumerate(X.tolist())
    ]
    path = cluster_tmp / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(files: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for f in files for line in Path(f).read_text().splitlines()]


def test_csv_batch_prediction_survives_a_server_kill9(
    live_server: LiveServer,
    live_client: RaydeckClient,
    cluster: str,
    model: str,
    csv_input: Path,
    cluster_tmp: Path,
) -> None:
    started = time.monotonic()
    job = live_client.batch_predictions.create(
        model=model,
        cluster=cluster,
        input=str(csv_input),
        output=str(cluster_tmp / "out"),
        feature_columns=FEATURES,
        batch_size=256,
    )
    assert job.state is BatchPredictionState.QUEUED
    assert job.model_version == "batch-churn@1"
    deadline = time.monotonic() + 60
    while (current := live_client.batch_predictions.get(job.id)).job_id is None:
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    assert current.state in (BatchPredictionState.PENDING, BatchPredictionState.RUNNING)

    live_server.kill9()  # the Ray job keeps running; the restarted server picks it up again
    live_server.start()

    done = live_client.batch_predictions.wait(job.id, timeout=300, poll=0.2)
    elapsed = time.monotonic() - started
    assert done.state is BatchPredictionState.SUCCEEDED, done.state_reason
    assert (done.counts.rows_total, done.counts.rows_succeeded, done.counts.rows_failed) == (
        ROWS,
        ROWS,
        0,
    )
    assert done.job_id == current.job_id and done.start_time and done.end_time
    assert done.output_files and all(Path(f).is_file() for f in done.output_files)
    rows = _rows(done.output_files)
    assert len(rows) == ROWS and all(r["error"] is None for r in rows)
    instances = np.array([r["instance"] for r in rows])
    assert [r["prediction"] for r in rows] == MODEL.predict(instances).tolist()
    assert sorted(map(tuple, instances.tolist())) == sorted(map(tuple, X.tolist()))
    summary = json.loads((cluster_tmp / "out" / "_summary.json").read_text())
    print(
        f"\nbatch prediction: {ROWS} rows in {elapsed:.1f}s end to end "
        f"({ROWS / elapsed:.0f} rows/s); inside the Ray job {summary['seconds']}s "
        f"({summary['rows_per_second']} rows/s)"
    )

    # Its Ray job is a Raydeck job too, and the logs carry the progress lines.
    assert done.job_id is not None
    assert live_client.jobs.wait(done.job_id, timeout=60).state is JobState.SUCCEEDED
    assert "progress: 2000 rows (2000 ok, 0 failed)" in live_client.batch_predictions.logs(job.id)

    # The same output directory again: refused, and the results stay as they are.
    with pytest.raises(InvalidArgumentError) as refused:
        live_client.batch_predictions.create(
            model=model, cluster=cluster, input=str(csv_input), output=str(cluster_tmp / "out")
        )
    assert refused.value.field == "output.uri"
    assert len(_rows(done.output_files)) == ROWS


def test_failure_reason_cancel_and_delete(
    live_client: RaydeckClient, cluster: str, model: str, csv_input: Path, cluster_tmp: Path
) -> None:
    # The input disappears between the request and the run: FAILED, with the runtime's reason.
    doomed = cluster_tmp / "doomed.csv"
    doomed.write_text(csv_input.read_text())
    job = live_client.batch_predictions.create(
        model=model, cluster=cluster, input=str(doomed), output=str(cluster_tmp / "out-failed")
    )
    doomed.unlink()
    failed = live_client.batch_predictions.wait(job.id, timeout=120, poll=0.2)
    assert failed.state is BatchPredictionState.FAILED
    assert failed.state_reason == f"{str(doomed)!r} matches no file", failed.state_reason

    # Cancel: caught QUEUED, PENDING or RUNNING, it ends CANCELLED and its Ray job stops.
    job = live_client.batch_predictions.create(
        model=model, cluster=cluster, input=str(csv_input), output=str(cluster_tmp / "out-cancel")
    )
    time.sleep(1.0)
    live_client.batch_predictions.cancel(job.id)
    ended = live_client.batch_predictions.wait(job.id, timeout=120, poll=0.2)
    assert ended.state is BatchPredictionState.CANCELLED, ended.state_reason
    if ended.job_id is not None:
        ray_job = live_client.jobs.wait(ended.job_id, timeout=60)
        assert ray_job.state in (JobState.STOPPED, JobState.FAILED)
    for finished in (failed, ended):
        assert live_client.batch_predictions.delete(finished.id).id == finished.id
    listed = {j.id for j in live_client.batch_predictions.list(cluster=cluster).items}
    assert not listed & {failed.id, ended.id}


def test_cli_create_wait_get_list(
    live_server: LiveServer, cluster: str, model: str, cluster_tmp: Path
) -> None:
    lines = [json.dumps(row) for row in X[:300].tolist()] + ['[1, "two", 3, 4]']
    (cluster_tmp / "part-a.jsonl").write_text("\n".join(lines[:150]) + "\n")
    (cluster_tmp / "part-b.jsonl").write_text("\n".join(lines[150:]) + "\n")
    env = live_server.client_env()
    created = raydeck(
        env,
        "batch-predict", "create", "--model", model, "--cluster", cluster,
        "--input", str(cluster_tmp / "part-*.jsonl"), "--output", str(cluster_tmp / "out"),
        "--batch-size", "64", "--output-format", "parquet", "--wait",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "SUCCEEDED" in created.stdout
    assert "301 rows (300 ok, 1 failed)" in created.stdout
    job_id = created.stdout.split("created ", 1)[1].split()[0]
    got = raydeck(env, "batch-predict", "get", job_id, "-o", "json")
    job = json.loads(got.stdout)
    assert job["counts"] == {"rows_total": 301, "rows_succeeded": 300, "rows_failed": 1}
    assert all(f.endswith(".parquet") for f in job["output_files"])
    listed = raydeck(env, "batch-predict", "list", "--cluster", cluster)
    assert job_id in listed.stdout
    missing = raydeck(
        env,
        "batch-predict", "create", "--model", model, "--cluster", cluster,
        "--input", str(cluster_tmp / "nothing-*.csv"), "--output", str(cluster_tmp / "o2"),
    )  # fmt: skip
    assert_one_line_error(missing, "invalid_argument", "matches no file")


def test_every_row_failing_fails_the_job_and_the_cli_exits_1(
    live_server: LiveServer, cluster: str, model: str, cluster_tmp: Path
) -> None:
    """Rows of 2 features for a 4-feature model: every row fails, so the job is FAILED (not
    SUCCEEDED with 0 ok), says why with an example row error, and `--wait` exits 1 with the
    counts in its last line. With a threshold the user allows, the same job succeeds."""
    (cluster_tmp / "short.csv").write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(50)))
    env = live_server.client_env()
    args = ["batch-predict", "create", "--model", model, "--cluster", cluster,
            "--input", str(cluster_tmp / "short.csv"), "--wait"]  # fmt: skip
    failed = raydeck(env, *args, "--output", str(cluster_tmp / "out-all-failed"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    last = failed.stdout.strip().splitlines()[-1]
    assert last.endswith("FAILED, 50 rows (0 ok, 50 failed)"), failed.stdout
    assert "reason:  all 50 rows failed; e.g. " in failed.stdout
    assert "4" in failed.stdout.split("e.g. ", 1)[1].splitlines()[0]  # the model expects 4

    allowed = raydeck(
        env, *args, "--output", str(cluster_tmp / "out-allowed"), "--max-failed-fraction", "1"
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert allowed.stdout.strip().splitlines()[-1].endswith("SUCCEEDED, 50 rows (0 ok, 50 failed)")


def test_duckdb_table_in_predictions_table_out(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, model: str, cluster_tmp: Path
) -> None:
    path = cluster_tmp / "bp.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id BIGINT, f0 DOUBLE, f1 DOUBLE, f2 DOUBLE, f3 DOUBLE)")
    con.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?, ?)", [(i, *x) for i, x in enumerate(X.tolist())]
    )
    con.close()
    live_client.connections.create(ConnectionCreate(name="bpwh", kind="duckdb", path=str(path)))
    env = live_server.client_env()
    created = raydeck(
        env,
        "batch-predict", "create", "--model", model, "--cluster", cluster,
        "--input-table", "bpwh.main.customers", "--output-table", "bpwh.scores.churn",
        *(arg for f in FEATURES for arg in ("--feature-column", f)), "--wait",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert f"{ROWS} rows ({ROWS} ok, 0 failed)" in created.stdout
    assert "table bpwh.scores.churn (create)" in created.stdout
    job_id = created.stdout.split("created ", 1)[1].split()[0]
    job = live_client.batch_predictions.get(job_id)
    assert job.output_files == []

    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("SELECT id, prediction, error FROM scores.churn ORDER BY id").fetchall()
    con.close()
    assert [r[0] for r in rows] == list(range(ROWS))  # every row once
    assert all(r[2] is None for r in rows)
    assert [r[1] for r in rows] == MODEL.predict(X).astype(float).tolist()

    # create again: refused up front, the table keeps its rows
    again = raydeck(
        env,
        "batch-predict", "create", "--model", model, "--cluster", cluster,
        "--input-table", "bpwh.main.customers", "--output-table", "bpwh.scores.churn",
    )  # fmt: skip
    assert_one_line_error(again, "already_exists", "bpwh.scores.churn")
