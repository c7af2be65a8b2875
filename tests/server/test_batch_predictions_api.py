"""Batch prediction API in-process: create rules (nothing stored on a 4xx), paging, cancel,
delete, roles. The Ray side is covered by tests/runtime and tests/e2e."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import duckdb
import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate
from raydeck.core.models.batch_predictions import BatchPredictionState, BatchPredictSpec
from raydeck.core.models.warehouse import ConnectionCreate
from raydeck.db.models import BatchPredictionJobRow, ClusterRow
from raydeck.server.services.batch_predictions import entrypoint
from tests.conftest import Api

PATH = "/api/v1/batchPredictionJobs"


def _set_cluster(api: Api, name: str, state: str) -> None:
    with api.app.state.raydeck.db.session() as session:
        for row in session.query(ClusterRow).filter(ClusterRow.name == name):
            row.state = state
            row.dashboard_url = "http://127.0.0.1:9"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    X, y = make_classification(60, 4, random_state=0)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    joblib.dump(LogisticRegression().fit(X, y), model_dir / "model.joblib")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in X[:5].tolist()))
    (data / "b.jsonl").write_text("[1, 2, 3, 4]\n")
    (data / "t.csv").write_text("f0,f1,f2,f3\n1,2,3,4\n")
    (data / "notes.txt").write_text("[1, 2, 3, 4]\n")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "predictions-0.jsonl").write_text("{}\n")
    return tmp_path


@pytest.fixture
def sdk(static_api: Api, files: Path) -> RaydeckClient:
    # Inputs, outputs, the model and the warehouse file live under tmp_path (so does the
    # server's home, which stays refused): an admin's RAYDECK_ALLOWED_ROOTS.
    static_api.settings.allowed_roots = str(files)
    client = static_api.sdk()
    client.clusters.create(ClusterCreate(name="dev"))
    client.clusters.create(ClusterCreate(name="booting"))
    _set_cluster(static_api, "dev", "RUNNING")
    client.models.upload("churn", files / "model", "sklearn", aliases=["prod"])
    return client


def _body(files: Path, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "churn@prod",
        "cluster": "dev",
        "input": {"uris": [str(files / "data" / "*.jsonl")]},
        "output": {"uri": str(files / "out")},
    }
    body.update(changes)
    return body


def _stored(api: Api) -> int:
    with api.app.state.raydeck.db.session() as session:
        return session.query(BatchPredictionJobRow).count()


def test_create_stores_a_queued_job_with_everything_resolved(
    static_api: Api, sdk: RaydeckClient, files: Path
) -> None:
    response = static_api.http.post(PATH, json=_body(files), headers=static_api.headers("user"))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "QUEUED"
    assert (job["model"], job["model_version"], job["framework"]) == (
        "churn@prod",
        "churn@1",
        "sklearn",
    )
    assert job["model_version_id"] == sdk.models.get_version("churn@1").id
    assert job["input"]["format"] == "jsonl"  # from the files' extension
    assert (job["batch_size"], job["concurrency"]) == (256, 1)
    assert job["resources"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert job["output"] == {
        "uri": str(files / "out"),
        "format": "jsonl",
        "table": None,
        "mode": "create",
    }
    assert job["counts"] == {"rows_total": 0, "rows_succeeded": 0, "rows_failed": 0}
    assert job["submission_id"].startswith("raydeck-bp-") and job["job_id"] is None
    assert sdk.batch_predictions.get(job["id"]).model_dump(mode="json") == job
    # The Ray job it will run: the server's interpreter, the runtime module, the whole spec.
    with static_api.app.state.raydeck.db.session() as session:
        argv = shlex.split(entrypoint(session.get(BatchPredictionJobRow, job["id"])))
    assert argv[1:4] == ["-m", "raydeck.runtime.batch_predict", "--spec"]
    spec = BatchPredictSpec.model_validate_json(argv[4])
    assert spec.artifact_uri == sdk.models.get_version("churn@1").artifact_uri
    assert spec.input.uris == [str(files / "data" / "*.jsonl")]
    assert (spec.framework, spec.batch_size, spec.job_id) == ("sklearn", 256, job["id"])


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"model": "nope"}, 404, "model"),
        ({"model": "churn@staging"}, 404, "model"),
        ({"model": "churn@7"}, 404, "model"),
        ({"cluster": "nope"}, 404, "cluster"),
        ({"cluster": "booting"}, 412, "cluster"),
        ({"input": {"uris": ["{data}/*.parquet"]}}, 400, "input.uris[0]"),
        ({"input": {"uris": ["{data}/a.jsonl", "{data}/missing.jsonl"]}}, 400, "input.uris[1]"),
        ({"input": {"uris": ["data/a.jsonl"]}}, 400, "input.uris[0]"),
        ({"input": {"uris": []}}, 400, "input.uris"),
        ({"input": {"uris": ["{data}/a.jsonl"] * 400}}, 400, "input.uris"),  # too long a command
        ({"input": {"uris": ["{data}/a.jsonl"], "format": "xml"}}, 400, "input.format"),
        ({"input": {"uris": ["{data}/notes.txt"]}}, 400, "input.format"),
        (
            {"input": {"uris": ["{data}/t.csv"], "feature_columns": ["f0", "f9"]}},
            400,
            "input.feature_columns",
        ),
        ({"batch_size": 0}, 400, "batch_size"),
        ({"batch_size": -5}, 400, "batch_size"),
        ({"concurrency": 0}, 400, "concurrency"),
        ({"resources": {"num_cpus": -1}}, 400, "resources.num_cpus"),
        ({"output": {"uri": "{root}/used"}}, 400, "output.uri"),
        ({"output": {"uri": "{data}/a.jsonl"}}, 400, "output.uri"),
        ({"output": {"uri": "relative/out"}}, 400, "output.uri"),
        ({"output": {"uri": "{root}/o", "format": "csv"}}, 400, "output.format"),
        ({"parameters": {"temperature": 1}}, 400, "parameters.temperature"),
        ({"surprise": 1}, 400, "surprise"),
    ],
)
def test_bad_requests_name_the_field_and_store_nothing(
    static_api: Api,
    sdk: RaydeckClient,
    files: Path,
    changes: dict[str, Any],
    status: int,
    field: str,
) -> None:
    text = json.dumps(changes).replace("{data}", str(files / "data"))
    body = _body(files, **json.loads(text.replace("{root}", str(files))))
    response = static_api.http.post(PATH, json=body, headers=static_api.headers())
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert "Traceback" not in error["message"]
    assert _stored(static_api) == 0
    assert not (files / "out").exists()


def test_an_output_directory_takes_one_live_job(
    static_api: Api, sdk: RaydeckClient, files: Path
) -> None:
    first = static_api.http.post(PATH, json=_body(files), headers=static_api.headers())
    assert first.status_code == 201
    second = static_api.http.post(PATH, json=_body(files), headers=static_api.headers())
    assert second.status_code == 400
    assert second.json()["error"]["field"] == "output.uri"
    assert first.json()["id"] in second.json()["error"]["message"]
    sdk.batch_predictions.cancel(first.json()["id"])  # ended: the directory is free again
    assert static_api.http.post(PATH, json=_body(files), headers=static_api.headers()).is_success


def test_csv_columns_parameters_and_sdk_relative_paths(
    static_api: Api, sdk: RaydeckClient, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)  # the SDK makes local paths absolute where they are relative to
    job = sdk.batch_predictions.create(
        model="churn",
        cluster="dev",
        input="data/t.csv",
        output="out-csv",
        feature_columns=["f3", "f2", "f1", "f0"],
        output_format="parquet",
        batch_size=1000,
        concurrency=2,
        parameters={"probabilities": True},
    )
    assert job.input.uris == [str(files / "data" / "t.csv")]
    assert job.input.format == "csv"
    assert job.input.feature_columns == ["f3", "f2", "f1", "f0"]
    assert (job.output.uri, job.output.format.value) == (str(files / "out-csv"), "parquet")
    assert (job.batch_size, job.concurrency, job.parameters) == (1000, 2, {"probabilities": True})


def test_list_pages_and_filters(static_api: Api, sdk: RaydeckClient, files: Path) -> None:
    ids = [
        sdk.batch_predictions.create(
            model="churn", cluster="dev", input=str(files / "data"), output=str(files / f"o{i}")
        ).id
        for i in range(5)
    ]
    sdk.batch_predictions.cancel(ids[1])
    seen, token = [], None
    while True:
        page = sdk.batch_predictions.list(page_size=2, page_token=token)
        assert len(page.items) <= 2
        seen += [j.id for j in page.items]
        token = page.next_page_token
        if token is None:
            break
    assert seen == ids  # creation order, each once
    cancelled = sdk.batch_predictions.list(state=BatchPredictionState.CANCELLED).items
    assert [j.id for j in cancelled] == [ids[1]]
    assert len(sdk.batch_predictions.list(state="QUEUED").items) == 4
    assert len(sdk.batch_predictions.list(cluster="dev").items) == 5
    assert sdk.batch_predictions.list(cluster="other").items == []
    response = static_api.http.get(
        PATH, params={"state": "DONE"}, headers=static_api.headers("viewer")
    )
    assert response.status_code == 400 and response.json()["error"]["field"] == "state"


def test_cancel_and_delete_rules(static_api: Api, sdk: RaydeckClient, files: Path) -> None:
    job = sdk.batch_predictions.create(
        model="churn", cluster="dev", input=str(files / "data"), output=str(files / "out")
    )
    response = static_api.http.delete(f"{PATH}/{job.id}", headers=static_api.headers())
    assert response.status_code == 412  # not ended yet
    response = static_api.http.get(f"{PATH}/{job.id}/logs", headers=static_api.headers())
    assert response.status_code == 412  # never submitted: no Ray logs
    cancelled = sdk.batch_predictions.cancel(job.id)
    assert cancelled.state is BatchPredictionState.CANCELLED
    assert cancelled.end_time is not None and cancelled.state_reason
    assert sdk.batch_predictions.cancel(job.id).state is BatchPredictionState.CANCELLED
    assert sdk.batch_predictions.delete(job.id).id == job.id
    for method, suffix in (("GET", ""), ("POST", ":cancel"), ("DELETE", "")):
        response = static_api.http.request(
            method, f"{PATH}/{job.id}{suffix}", headers=static_api.headers()
        )
        assert response.status_code == 404, (method, suffix)

    done = sdk.batch_predictions.create(
        model="churn", cluster="dev", input=str(files / "data"), output=str(files / "out")
    )
    with static_api.app.state.raydeck.db.session() as session:
        session.get(BatchPredictionJobRow, done.id).state = "SUCCEEDED"  # type: ignore[union-attr]
    response = static_api.http.post(f"{PATH}/{done.id}:cancel", headers=static_api.headers())
    assert response.status_code == 412 and response.json()["error"]["field"] == "job"


def test_roles_and_tokens(static_api: Api, sdk: RaydeckClient, files: Path) -> None:
    body = _body(files)
    response = static_api.http.post(PATH, json=body, headers=static_api.headers("viewer"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert static_api.http.post(PATH, json=body).status_code == 401
    assert static_api.http.get(PATH).status_code == 401
    assert _stored(static_api) == 0
    created = static_api.http.post(PATH, json=body, headers=static_api.headers("user")).json()
    viewer = static_api.sdk("viewer")
    assert viewer.batch_predictions.get(created["id"]).id == created["id"]
    assert [j.id for j in viewer.batch_predictions.list().items] == [created["id"]]
    for method, suffix in (("POST", ":cancel"), ("DELETE", "")):
        response = static_api.http.request(
            method, f"{PATH}/{created['id']}{suffix}", headers=static_api.headers("viewer")
        )
        assert response.status_code == 403, (method, suffix)


def test_reconciler_waits_for_an_unreachable_cluster_then_fails_with_it(
    api: Api, files: Path
) -> None:
    api.settings.allowed_roots = str(files)
    sdk = api.sdk()
    sdk.clusters.create(ClusterCreate(name="dev"))
    sdk.clusters.wait("dev", timeout=10)  # the in-memory backend's dashboard is unreachable
    sdk.models.upload("churn", files / "model", "sklearn")
    job = sdk.batch_predictions.create(
        model="churn", cluster="dev", input=str(files / "data"), output=str(files / "out")
    )
    deadline = time.monotonic() + 10
    while "waiting to submit" not in (sdk.batch_predictions.get(job.id).state_reason or ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sdk.batch_predictions.get(job.id).state is BatchPredictionState.QUEUED
    sdk.clusters.delete("dev")
    ended = sdk.batch_predictions.wait(job.id, timeout=10, poll=0.05)
    assert ended.state is BatchPredictionState.FAILED
    assert ended.state_reason is not None and "cluster 'dev' is" in ended.state_reason


# ---- warehouse tables --------------------------------------------------------------------------


@pytest.fixture
def warehouse(sdk: RaydeckClient, files: Path) -> Path:
    path = files / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE customers AS SELECT range AS id, range * 0.5 AS f0, "
        "range * 1.5 AS f1, range % 7 AS f2, range % 3 AS f3 FROM range(20)"
    )
    con.execute(
        "CREATE TABLE scored (id BIGINT, f0 DOUBLE, f1 DOUBLE, f2 BIGINT, f3 BIGINT, "
        "prediction DOUBLE, error VARCHAR)"
    )
    con.execute("CREATE TABLE odd (id BIGINT, prediction DOUBLE)")
    con.close()
    sdk.connections.create(ConnectionCreate(name="wh", kind="duckdb", path=str(path)))
    return path


def _table_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "churn@prod",
        "cluster": "dev",
        "input": {"table": "wh.main.customers", "feature_columns": ["f0", "f1", "f2", "f3"]},
        "output": {"table": "wh.main.predictions"},
    }
    body.update(changes)
    return body


def test_table_input_and_output_are_checked_and_stored(
    static_api: Api, sdk: RaydeckClient, files: Path, warehouse: Path
) -> None:
    job = sdk.batch_predictions.create(
        model="churn@prod",
        cluster="dev",
        input_table="wh.customers",
        output_table="wh.main.predictions",
        feature_columns=["f0", "f1", "f2", "f3"],
    )
    assert (job.input.table, job.input.uris, job.input.format) == ("wh.customers", None, None)
    assert (job.output.table, job.output.uri, job.output.mode.value) == (
        "wh.main.predictions",
        None,
        "create",
    )
    assert sdk.batch_predictions.get(job.id) == job
    with static_api.app.state.raydeck.db.session() as session:
        argv = shlex.split(entrypoint(session.get(BatchPredictionJobRow, job.id)))
    spec = BatchPredictSpec.model_validate_json(argv[4])
    # Progress and summary of a table output live in the artifact store, per job.
    settings = static_api.app.state.raydeck.settings
    assert spec.status_directory == f"{settings.artifact_root}/batch_predictions/{job.id}"
    assert "secret" not in argv[4]  # the job resolves connections itself, with its token

    # The same output table again while the first job is live: refused.
    second = static_api.http.post(PATH, json=_table_body(), headers=static_api.headers())
    assert second.status_code == 400, second.text
    assert second.json()["error"]["field"] == "output.table"

    # Appending to a table with exactly the predictions' columns is fine; files → table too.
    appended = _table_body(output={"table": "wh.main.scored", "mode": "append"})
    response = static_api.http.post(PATH, json=appended, headers=static_api.headers())
    assert response.status_code == 201, response.text
    from_files = _body(files, output={"table": "wh.main.from_files"})
    response = static_api.http.post(PATH, json=from_files, headers=static_api.headers())
    assert response.status_code == 201, response.text
    assert response.json()["input"]["format"] == "jsonl"


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"input": {"table": "wh"}}, 400, "input.table"),
        ({"input": {"table": "wh.main.1bad"}}, 400, "input.table"),
        ({"input": {"table": "nope.main.customers"}}, 404, "input.table"),
        ({"input": {"table": "wh.main.missing"}}, 404, "input.table"),
        ({"input": {"table": "wh.nope.customers"}}, 404, "input.table"),
        ({"input": {"table": "wh.customers", "uris": ["/tmp"]}}, 400, "input"),
        ({"input": {"table": "wh.customers", "format": "csv"}}, 400, "input"),
        (
            {"input": {"table": "wh.customers", "feature_columns": ["f0", "f9"]}},
            400,
            "input.feature_columns",
        ),
        ({"input": {"table": "wh.odd"}}, 400, "input.table"),  # has a "prediction" column
        ({"output": {"table": "wh.main.customers"}}, 409, "output.table"),  # create: exists
        ({"output": {"table": "wh.main.odd", "mode": "append"}}, 400, "output.table"),
        ({"output": {"table": "nope.t"}}, 404, "output.table"),
        ({"output": {"table": "wh.t", "mode": "overwrite"}}, 400, "output.mode"),
        ({"output": {"table": "wh.t", "uri": "/tmp/x"}}, 400, "output"),
        ({"output": {}}, 400, "output"),
    ],
)
def test_bad_table_requests_name_the_field_and_store_nothing(
    static_api: Api,
    sdk: RaydeckClient,
    warehouse: Path,
    changes: dict[str, Any],
    status: int,
    field: str,
) -> None:
    response = static_api.http.post(PATH, json=_table_body(**changes), headers=static_api.headers())
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert _stored(static_api) == 0
    con = duckdb.connect(str(warehouse), read_only=True)
    tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    con.close()
    assert tables == {"customers", "scored", "odd"}
