"""The shipped Grafana dashboard only charts metrics /metrics actually exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "raydeck-dashboard.json"


def test_dashboard_queries_name_exported_metrics(static_api: Api) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 12
    used = {m for expr in exprs for m in re.findall(r"\braydeck_[a-z_]+", expr)}
    text = static_api.http.get("/metrics", headers=static_api.headers()).text
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(
            family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum", "_created")
        )
    assert used and used <= exported, sorted(used - exported)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
