"""raydeck top: a live terminal summary of clusters, jobs, endpoints and cost."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.live import Live
from rich.table import Table

from raydeck.cli.output import console
from raydeck.client import RaydeckClient

__all__ = ["render_summary", "top"]


def _prediction_counts(metrics_text: str) -> dict[str, tuple[float, float, float]]:
    """endpoint → (requests, errors, relayed), as ``/metrics`` counts them: requests and
    errors answered by the endpoint's ingress (``raydeck_endpoint_serve_*``: calls straight to
    ``predict_url`` and the control plane's relay alike), and the relayed part of them. An
    endpoint whose ingress stats were not polled yet falls back to the relay's counts."""
    serve: dict[str, list[float]] = {}
    relay: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            name = sample.labels.get("endpoint", "")
            if sample.name == "raydeck_endpoint_serve_requests_total":
                serve.setdefault(name, [0.0, 0.0])[0] += sample.value
            elif sample.name == "raydeck_endpoint_serve_errors_total":
                serve.setdefault(name, [0.0, 0.0])[1] += sample.value
            elif sample.name == "raydeck_endpoint_predictions_total":
                relay.setdefault(name, [0.0, 0.0])[0] += sample.value
            elif sample.name == "raydeck_endpoint_prediction_errors_total":
                relay.setdefault(name, [0.0, 0.0])[1] += sample.value
    counts = {}
    for name in serve.keys() | relay.keys():
        relayed = relay.get(name, [0.0, 0.0])
        requests, errors = serve.get(name, relayed)
        counts[name] = (max(requests, relayed[0]), max(errors, relayed[1]), relayed[0])
    return counts


def render_summary(client: RaydeckClient) -> Group:
    clusters = client.clusters.list(page_size=1000).items
    jobs = client.jobs.list(page_size=1000).items
    endpoints = client.endpoints.list(page_size=1000).items
    report = client.billing.report("cluster")
    cost = {row.key: row.amount for row in report.rows}
    predictions = _prediction_counts(client.metrics.text())

    table = Table(title=f"clusters (project {client.project})", title_justify="left")
    for column in ("name", "state", "nodes", "pools", "cost"):
        table.add_column(column)
    for cluster in clusters:
        alive = sum(1 for n in cluster.nodes if n.alive)
        pools = " ".join(
            f"{p.name}={p.current_replica_count}/{p.replica_count}" for p in cluster.worker_pools
        )
        table.add_row(
            cluster.name,
            cluster.state.value,
            str(alive),
            pools,
            f"{cost.get(cluster.id, 0.0):.4f}",
        )
    states = Counter(job.state.value for job in jobs)
    job_table = Table(title="jobs", title_justify="left")
    for state in sorted(states):
        job_table.add_column(state)
    job_table.add_row(*(str(states[s]) for s in sorted(states)))
    endpoint_table = Table(title="endpoints", title_justify="left")
    for column in ("name", "state", "models", "predictions", "errors", "via relay"):
        endpoint_table.add_column(column)
    for endpoint in endpoints:
        requests, errors, relayed = predictions.get(endpoint.display_name, (0.0, 0.0, 0.0))
        endpoint_table.add_row(
            endpoint.display_name,
            endpoint.state.value,
            str(len(endpoint.deployed_models)),
            f"{requests:.0f}",
            f"{errors:.0f}",
            f"{relayed:.0f}",
        )
    total = f"cost so far: {report.total:.4f} {report.currency}"
    return Group(table, job_table, endpoint_table, total)


def top(
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one summary and exit.")] = False,
) -> None:
    """Live summary of what runs and what it costs (Ctrl-C to leave)."""
    with RaydeckClient() as client:
        if once:
            console.print(render_summary(client))
            return
        with Live(render_summary(client), console=console, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(render_summary(client))
