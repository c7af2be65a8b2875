"""`raydeck top` counts predictions as /metrics does: the ingress's counts (direct calls to
predict_url and relayed ones), with the relayed part beside them."""

from __future__ import annotations

from raydeck.cli.top import _prediction_counts


def _sample(family: str, endpoint: str, value: float, **labels: str) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in {"endpoint": endpoint, **labels}.items())
    return f"{family}{{{text}}} {value}"


METRICS = "\n".join(
    [
        "# TYPE raydeck_endpoint_serve_requests counter",
        _sample("raydeck_endpoint_serve_requests_total", "churn-api", 60, dm="1", code="200"),
        _sample("raydeck_endpoint_serve_requests_total", "churn-api", 3, dm="2", code="200"),
        _sample("raydeck_endpoint_serve_requests_total", "churn-api", 2, dm="1", code="500"),
        "# TYPE raydeck_endpoint_serve_errors counter",
        _sample("raydeck_endpoint_serve_errors_total", "churn-api", 2, dm="1"),
        "# TYPE raydeck_endpoint_predictions counter",
        _sample("raydeck_endpoint_predictions_total", "churn-api", 2, dm="1", status="ok"),
        _sample("raydeck_endpoint_predictions_total", "fresh", 4, dm="9", status="ok"),
        "# TYPE raydeck_endpoint_prediction_errors counter",
        _sample("raydeck_endpoint_prediction_errors_total", "fresh", 1, dm="9"),
        "",
    ]
)


def test_top_counts_direct_and_relayed_predictions_like_metrics() -> None:
    counts = _prediction_counts(METRICS)
    assert counts["churn-api"] == (65.0, 2.0, 2.0)  # 63 direct + 2 relayed, all via the ingress
    assert counts["fresh"] == (4.0, 1.0, 4.0)  # ingress not polled yet: the relay's counts
