"""Log collection and queries: predict errors, cluster log files across a restart, retention."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from raydeck.backends.base import ClusterSpec, LogFileSource, NodeLogFile
from raydeck.core.models.operations import LogResourceKind
from raydeck.server.services import logs as log_service
from tests.conftest import Api
from tests.fakes import InMemoryClusterBackend
from tests.waiting import wait_until


class FileLogBackend(InMemoryClusterBackend, LogFileSource):
    """In-memory clusters whose nodes write real log files under ``root`` (as Ray's do)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def log_file(self, spec_name: str, node: str, relative: str) -> Path:
        path = self.root / spec_name / node / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_files(self, spec: ClusterSpec) -> list[NodeLogFile]:
        base = self.root / spec.name
        return [
            NodeLogFile(p.parent.name, p, p.name) for p in sorted(base.glob("*/*")) if p.is_file()
        ]


def _query(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = api.http.get("/api/v1/logs", params=params, headers=api.headers("viewer"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_predict_error_is_found_by_query(api: Api) -> None:
    assert (
        api.http.post("/api/v1/clusters", json={"name": "pc"}, headers=api.headers()).status_code
        == 201
    )
    api.sdk().clusters.wait("pc")
    body = {"display_name": "churn", "cluster": "pc"}
    assert api.http.post("/api/v1/endpoints", json=body, headers=api.headers()).status_code == 201
    failed = api.http.post(
        "/api/v1/endpoints/churn:predict", json={"instances": [[1, 2]]}, headers=api.headers()
    )
    assert failed.status_code == 412
    found = _query(api, resource="endpoint/churn", severity="ERROR", text="predict failed")
    assert len(found) == 1
    assert found[0]["resource_kind"] == "endpoint" and found[0]["source"] == "predict"
    assert "no model serving" in found[0]["text"]
    assert _query(api, resource="endpoint/churn", severity="ERROR", text="nothing like it") == []
    assert _query(api, resource="job/churn") == []


def test_cluster_log_files_are_collected_once_across_a_restart(tmp_path: Path) -> None:
    backend = FileLogBackend(tmp_path / "nodes")
    home = tmp_path / "home"
    first = Api(home, run_reconcilers=True, backend=backend, log_collect_interval=0.05)
    try:
        assert (
            first.http.post(
                "/api/v1/clusters",
                json={"name": "lc", "worker_pools": [{"name": "w", "replica_count": 1}]},
                headers=first.headers(),
            ).status_code
            == 201
        )
        first.sdk().clusters.wait("lc")
        raylet = backend.log_file("lc", "head", "raylet.out")
        raylet.write_text("[INFO] raylet started\nERROR: worker w-0 died\npartial line")
        backend.log_file("lc", "w-0", "raylet.out").write_text("WARNING low memory\n")
        wait_until(lambda: len(_query(first, resource="cluster/lc")) == 3, "three lines")
        errors = _query(first, resource="cluster/lc", severity="ERROR")
        assert [e["text"] for e in errors] == ["ERROR: worker w-0 died"]
        assert errors[0]["source"] == "head/raylet.out"
        warnings = _query(first, resource="cluster/lc", severity="WARNING")
        assert {w["source"] for w in warnings} == {"head/raylet.out", "w-0/raylet.out"}
    finally:
        first.close()

    with raylet.open("a") as handle:  # written while the server was down
        handle.write(" now ends\n[INFO] after restart\n")
    second = Api(
        home, run_reconcilers=True, backend=backend, log_collect_interval=0.05, tokens=first.tokens
    )
    try:
        wait_until(lambda: len(_query(second, resource="cluster/lc")) == 5, "the new lines")
        time.sleep(0.3)  # a few more collector passes: nothing may be added twice
        texts = [e["text"] for e in _query(second, resource="cluster/lc")]
        assert texts == [
            "[INFO] raylet started",
            "ERROR: worker w-0 died",
            "WARNING low memory",
            "partial line now ends",
            "[INFO] after restart",
        ]
        # Follow-style paging: everything after the last id seen.
        first_two = _query(second, resource="cluster/lc", page_size=2)
        rest = _query(second, resource="cluster/lc", after=first_two[-1]["id"])
        assert [e["text"] for e in first_two + rest] == texts
        # Rotated (truncated) file: read again from its start, then on from there.
        raylet.write_text("[INFO] rotated\n")
        wait_until(lambda: len(_query(second, resource="cluster/lc")) == 6, "the rotated line")
        with raylet.open("a") as handle:
            handle.write("[INFO] after rotation\n")
        wait_until(lambda: len(_query(second, resource="cluster/lc")) == 7, "the next line")
        time.sleep(0.3)
        texts = [e["text"] for e in _query(second, resource="cluster/lc")]
        assert texts[-2:] == ["[INFO] rotated", "[INFO] after rotation"] and len(texts) == 7
    finally:
        second.close()


def test_retention_by_age_and_size(static_api: Api) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)

    def line(age_days: float, text: str) -> log_service.LogLine:
        return log_service.LogLine(
            "default",
            LogResourceKind.JOB,
            "job-1",
            "s",
            "test",
            now - timedelta(days=age_days),
            text,
        )

    with static_api.app.state.raydeck.db.session() as session:
        log_service.store_lines(
            session, [line(30, "old"), line(2, "a" * 100), line(1, "b" * 100), line(0, "c" * 100)]
        )
        removed = log_service.enforce_retention(
            session, now=now, max_age=timedelta(days=7), max_bytes=250
        )
        assert removed == 2  # "old" by age, then the oldest of the rest by size
        left = log_service.query_logs(session, projects=None, resource="job/job-1")
    assert [e.text[0] for e in left.items] == ["b", "c"]


def test_newest_records_like_tail_in_time_order(static_api: Api) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    lines = [
        log_service.LogLine(
            "default", LogResourceKind.JOB, "job-2", "s", "test", now + timedelta(seconds=i), f"{i}"
        )
        for i in range(10)
    ]
    with static_api.app.state.raydeck.db.session() as session:
        log_service.store_lines(session, lines)
    assert [e["text"] for e in _query(static_api, resource="job/job-2", page_size=3)] == [
        "0",
        "1",
        "2",
    ]
    newest = _query(static_api, resource="job/job-2", page_size=3, newest="true")
    assert [e["text"] for e in newest] == ["7", "8", "9"]


def test_bad_queries_name_the_field(static_api: Api) -> None:
    for params, field in [
        ({"resource": "planet/x"}, "resource"),
        ({"severity": "LOUD"}, "severity"),
        ({"since": "yesterday"}, "since"),
        ({"after": -1}, "after"),
    ]:
        response = static_api.http.get("/api/v1/logs", params=params, headers=static_api.headers())
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["field"] == field


def test_line_severities_follow_the_record_a_line_continues() -> None:
    lines = [
        "INFO 2026-12-01 10:00:00,001 ep-1_model-dm-1 r1 -- Started initializing replica.",
        "ERROR 2026-12-01 10:00:01,002 ep-1_model-dm-1 r1 -- predict failed: ValueError",
        "Traceback (most recent call last):",
        '  File "predictor.py", line 5, in predict',
        "ValueError: cannot score x",
        "WARNING 2026-12-01 10:00:02,003 ep-1_model-dm-1 r1 -- predict refused: bad input",
        "[2026-12-01 10:00:03,004 I 12 34] (raylet) main.cc:1: no Error: here, just a word",
        "[2026-12-01 10:00:04,005 E 12 34] (raylet) node_manager.cc:9: worker died",
    ]
    assert [s.value for s in log_service.line_severities(lines)] == [
        "INFO",
        "ERROR",
        "ERROR",
        "ERROR",
        "ERROR",
        "WARNING",
        "INFO",
        "ERROR",
    ]
    # Before any record starts, a line's own text decides.
    assert [s.value for s in log_service.line_severities(["Traceback (x)", "plain"])] == [
        "ERROR",
        "INFO",
    ]
