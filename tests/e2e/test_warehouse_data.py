"""Warehouse data through a real cluster and a real server: 1,000,000 rows read from a DuckDB
connection, transformed and written back by a Ray job using ``raydeck.data``, checked with
exact counts and checksums computed independently by DuckDB; then browsed over the CLI.
Neither the Ray job nor the training job is handed credentials: Raydeck gives every job it
submits RAYDECK_SERVER and a job-scoped RAYDECK_TOKEN, with which ``raydeck.data`` resolves
connections."""

from __future__ import annotations

import textwrap
from pathlib import Path

import duckdb
import pytest

from raydeck.client import RaydeckClient
from raydeck.core.models import JobState
from raydeck.core.models.training import CustomJobCreate, TrainingState
from raydeck.core.models.warehouse import ConnectionCreate
from tests.cli.test_cli import raydeck
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS = 1_000_000

ROUND_TRIP = """
import pyarrow.compute as pc
import raydeck.data as rdata

ds = rdata.read_table("wh.main.events")

def score(batch):
    w = pc.add(pc.multiply(batch["v"], 3), batch["k"])
    return batch.append_column("w", w)

out = ds.map_batches(score, batch_format="pyarrow")
result = rdata.write_table(out, "wh.scored.events", mode="create")
print("rows written:", result.rows_written)
pushed = rdata.sql_transform(
    "wh",
    "SELECT k, count(*) AS n, sum(w) AS w FROM scored.events GROUP BY k",
    into="wh.scored.by_k",
)
print("by_k rows:", pushed.rows_written)
"""


def _checksums(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, ...]:
    return tuple(int(v) for v in con.execute(sql).fetchall()[0])


def test_million_row_duckdb_round_trip_through_a_cluster(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, tmp_path: Path
) -> None:
    connection = live_client.connections.create(ConnectionCreate(name="wh", kind="duckdb"))
    assert connection.path is not None
    Path(connection.path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(connection.path)
    con.execute(
        "CREATE TABLE events AS SELECT range AS id, range % 97 AS k, "
        f"(range * 7919) % 100003 AS v FROM range({ROWS})"
    )
    expected = _checksums(
        con,
        "SELECT count(*), count(DISTINCT id), sum(id), sum(v * 3 + k), "
        "bit_xor(hash(id, v * 3 + k)) FROM events",
    )
    con.close()

    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "round_trip.py").write_text(textwrap.dedent(ROUND_TRIP))
    job = live_client.jobs.submit(
        cluster,
        "python round_trip.py",
        working_dir=tmp_path / "job",
    )
    done = live_client.jobs.wait(job.id, timeout=900)
    logs = live_client.jobs.logs(job.id)
    assert done.state is JobState.SUCCEEDED, logs[-3000:]
    assert f"rows written: {ROWS}" in logs
    assert "by_k rows: 97" in logs

    con = duckdb.connect(connection.path, read_only=True)
    actual = _checksums(
        con,
        "SELECT count(*), count(DISTINCT id), sum(id), sum(w), bit_xor(hash(id, w)) "
        "FROM scored.events",
    )
    by_k = _checksums(con, "SELECT count(*), sum(n), sum(w) FROM scored.by_k")
    con.close()
    assert actual == expected
    assert by_k == (97, ROWS, expected[3])

    # The same tables through the CLI (REST): listing with row counts, preview, query.
    env = live_server.client_env()
    listed = raydeck(env, "data", "tables", "wh", "--dataset", "scored")
    assert listed.returncode == 0, listed.stderr
    assert "events" in listed.stdout and "1000000" in listed.stdout.replace(",", "")
    query = raydeck(
        env, "data", "query", "wh", "SELECT count(*) AS n FROM scored.events", "-o", "json"
    )
    assert query.returncode == 0, query.stderr
    assert f"{ROWS}" in query.stdout


TRAIN = """
import os
import joblib
import raydeck.data as rdata
from sklearn.linear_model import LinearRegression

frame = rdata.read_table("wh.main.train").to_pandas()
model = LinearRegression().fit(frame[["x"]], frame["y"])
os.makedirs(os.environ["AIP_MODEL_DIR"], exist_ok=True)
joblib.dump(model, os.path.join(os.environ["AIP_MODEL_DIR"], "model.joblib"))
print(f"trained on {len(frame)} rows, slope {model.coef_[0]:.3f}")
"""


def test_custom_job_reads_a_table_with_its_injected_credentials(
    live_client: RaydeckClient, cluster: str, cluster_tmp: Path
) -> None:
    connection = live_client.connections.get("wh")  # made by the round-trip test above
    assert connection.path is not None
    con = duckdb.connect(connection.path)
    con.execute(
        "CREATE OR REPLACE TABLE train AS SELECT range AS x, 2 * range + 1 AS y FROM range(2000)"
    )
    con.close()
    script = cluster_tmp / "train.py"
    script.write_text(textwrap.dedent(TRAIN))
    job = live_client.custom_jobs.create(
        CustomJobCreate.model_validate(
            {
                "cluster": cluster,
                "base_output_dir": str(cluster_tmp / "out"),
                "worker_pool_specs": [{"script": {"path": str(script)}}],
            }
        )
    )
    done = live_client.custom_jobs.wait(job.id, timeout=300)
    log = live_client.custom_jobs.logs(job.id)
    assert done.state is TrainingState.SUCCEEDED, f"{done.state_reason}\n{log[-2000:]}"
    assert "trained on 2000 rows, slope 2.000" in log
    assert (cluster_tmp / "out" / "model" / "model.joblib").is_file()
