"""Console output helpers: ids are never cut at 80 columns; state lines print on change."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rich.console import Console

from raydeck.cli import output


def test_ids_are_never_truncated_in_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = Console(width=80, record=True)
    monkeypatch.setattr(output, "console", narrow)
    job_id = "bpj-0661beab2a84b7d4cc94db0abc"
    columns = ["id", "model", "cluster", "state", "rows", "failed", "created"]
    row = (job_id, "churn-model@12", "dev-cluster", "SUCCEEDED", 2000, 0, "2026-12-03 18:10:06")
    output.print_table("jobs", columns, [row])
    assert job_id in narrow.export_text()


@dataclass
class _Job:
    state: str
    state_reason: str | None


def test_wait_prints_each_state_and_reason_once(monkeypatch: pytest.MonkeyPatch) -> None:
    err = Console(width=200, record=True)
    monkeypatch.setattr(output, "err_console", err)
    seen = iter(
        [
            _Job("QUEUED", None),
            _Job("RUNNING", "waiting for 1 CPU; largest free slot 0.5 CPU on workers-0"),
            _Job("RUNNING", "waiting for 1 CPU; largest free slot 0.5 CPU on workers-0"),
            _Job("RUNNING", None),
            _Job("SUCCEEDED", None),
        ]
    )
    done = output.wait_with_progress(
        "job j", lambda: next(seen), lambda j: j.state == "SUCCEEDED", str, timeout=60, interval=0
    )
    assert done.state == "SUCCEEDED"
    lines = [line.rsplit(" (", 1)[0] for line in err.export_text().splitlines() if line.strip()]
    assert lines == [
        "job j: QUEUED",
        "job j: RUNNING: waiting for 1 CPU; largest free slot 0.5 CPU on workers-0",
        "job j: RUNNING",
        "job j: SUCCEEDED",
    ]
