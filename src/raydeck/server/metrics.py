"""Prometheus metrics of the control plane, on a registry of its own (one per app).

Request counters and latency come from a middleware; the state of clusters, nodes, jobs,
endpoints, cost and budgets is read from the database at scrape time, so it is exact
after a restart and costs nothing between scrapes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raydeck.db.models import (
    BudgetRow,
    ClusterRow,
    CostRecordRow,
    EndpointRow,
    JobRow,
    TrainingJobRow,
    TrialRow,
)
from raydeck.db.session import Database

__all__ = [
    "MetricsMiddleware",
    "ServeTraffic",
    "ServerMetrics",
    "StateMetrics",
    "exposition_for",
]

StateMetrics = Callable[[Session], Iterable[Metric]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServerMetrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "raydeck_http_requests",
            "HTTP requests served by the control plane",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "raydeck_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "raydeck_endpoint_predictions",
            "Predict requests relayed to endpoints, per deployed model and outcome",
            ["project", "endpoint", "deployed_model", "model", "status"],
            registry=self.registry,
        )
        self.prediction_errors = Counter(
            "raydeck_endpoint_prediction_errors",
            "Predict requests that failed (4xx/5xx or no answer)",
            ["project", "endpoint", "deployed_model"],
            registry=self.registry,
        )
        self.prediction_latency = Histogram(
            "raydeck_endpoint_prediction_duration_seconds",
            "Predict latency seen by the control plane's relay",
            ["project", "endpoint", "deployed_model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.budget_alerts = Counter(
            "raydeck_budget_alerts",
            "Budget thresholds crossed (kind: alert or limit)",
            ["project", "kind"],
            registry=self.registry,
        )
        self.log_records = Counter(
            "raydeck_log_records_collected",
            "Log records stored by the collector",
            ["resource_kind"],
            registry=self.registry,
        )
        self.state_collector = _StateCollector(db)
        self.registry.register(self.state_collector)
        self.serve_traffic = ServeTraffic()
        self.registry.register(self.serve_traffic)

    def add_state_metrics(self, collect: StateMetrics) -> None:
        """Extra families read from the database at scrape time (e.g. tuning trials by
        state, registered by the training service), next to the built-in ones."""
        self.state_collector.extra.append(collect)


def exposition_for(registry: CollectorRegistry, projects: set[str] | None) -> bytes:
    """The Prometheus text a caller may see: with ``projects`` None (bound on every project),
    everything; otherwise only series whose ``project`` label is one of ``projects``. Series
    without a project (the control plane's own HTTP and collector counters) are server-wide
    and shown only to callers bound on every project."""
    if projects is None:
        return generate_latest(registry)
    view = CollectorRegistry(auto_describe=False)
    view.register(_ProjectFilter(registry, frozenset(projects)))
    return generate_latest(view)


class _ProjectFilter(Collector):
    def __init__(self, source: CollectorRegistry, projects: frozenset[str]) -> None:
        self._source = source
        self._projects = projects

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            samples = [s for s in family.samples if s.labels.get("project") in self._projects]
            if not samples:
                continue
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = samples
            yield kept


class _StateCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.extra: list[StateMetrics] = []

    def describe(self) -> list[Any]:
        return []  # collected on demand; nothing to describe ahead of time

    def collect(self) -> Iterator[Any]:
        clusters = GaugeMetricFamily(
            "raydeck_clusters", "Clusters by state", labels=["project", "state"]
        )
        nodes = GaugeMetricFamily(
            "raydeck_cluster_nodes",
            "Nodes of each cluster by pool and state (alive/dead)",
            labels=["project", "cluster", "pool", "state"],
        )
        jobs = GaugeMetricFamily("raydeck_jobs", "Jobs by state", labels=["project", "state"])
        endpoints = GaugeMetricFamily(
            "raydeck_endpoints", "Endpoints by state", labels=["project", "state"]
        )
        deployed = GaugeMetricFamily(
            "raydeck_endpoint_deployed_models",
            "Models deployed on each endpoint with their traffic share",
            labels=["project", "endpoint", "deployed_model", "model"],
        )
        cost = CounterMetricFamily(
            "raydeck_cost_accrued",
            "Cost accrued by clusters, in the catalog's currency",
            labels=["project", "cluster"],
        )
        training = GaugeMetricFamily(
            "raydeck_training_jobs",
            "Custom and tuning jobs by kind and state",
            labels=["project", "kind", "state"],
        )
        trials = GaugeMetricFamily(
            "raydeck_tuning_trials",
            "Hyperparameter tuning trials by state",
            labels=["project", "tuning_job", "state"],
        )
        budget_limit = GaugeMetricFamily(
            "raydeck_budget_limit", "Budget hard limit per project", labels=["project"]
        )
        budget_spent = GaugeMetricFamily(
            "raydeck_budget_spent", "Spend counted against each budget", labels=["project"]
        )
        budget_exhausted = GaugeMetricFamily(
            "raydeck_budget_exhausted",
            "1 while a project's hard limit is reached",
            labels=["project"],
        )
        with self._db.session() as session:
            for project, state, count in session.execute(
                select(ClusterRow.project, ClusterRow.state, func.count()).group_by(
                    ClusterRow.project, ClusterRow.state
                )
            ):
                clusters.add_metric([project, state], count)
            for row in session.scalars(select(ClusterRow)):
                counts: dict[tuple[str, str], int] = {}
                for node in row.spec.get("nodes", []):
                    key = (str(node.get("pool")), "alive" if node.get("alive") else "dead")
                    counts[key] = counts.get(key, 0) + 1
                for (pool, node_state), count in sorted(counts.items()):
                    nodes.add_metric([row.project, row.name, pool, node_state], count)
            for project, state, count in session.execute(
                select(JobRow.project, JobRow.state, func.count()).group_by(
                    JobRow.project, JobRow.state
                )
            ):
                jobs.add_metric([project, state], count)
            for endpoint in session.scalars(select(EndpointRow)):
                endpoints.add_metric([endpoint.project, endpoint.state], 1)
                split = endpoint.spec.get("traffic_split", {})
                for model in endpoint.spec.get("deployed_models", []):
                    labels = [endpoint.project, endpoint.name, str(model.get("id"))]
                    deployed.add_metric(
                        [*labels, str(model.get("model"))],
                        float(split.get(model.get("id"), 0)),
                    )
            for project, cluster, amount in session.execute(
                select(
                    CostRecordRow.project,
                    CostRecordRow.subject_name,
                    func.sum(CostRecordRow.amount),
                )
                .where(CostRecordRow.kind == "cluster")
                .group_by(CostRecordRow.project, CostRecordRow.subject_name)
            ):
                cost.add_metric([project, cluster], float(amount or 0.0))
            for project, kind, state, count in session.execute(
                select(
                    TrainingJobRow.project, TrainingJobRow.kind, TrainingJobRow.state, func.count()
                ).group_by(TrainingJobRow.project, TrainingJobRow.kind, TrainingJobRow.state)
            ):
                training.add_metric([project, kind, state], count)
            for project, job_name, state, count in session.execute(
                select(
                    TrainingJobRow.project,
                    TrainingJobRow.display_name,
                    TrialRow.state,
                    func.count(),
                )
                .join(TrainingJobRow, TrainingJobRow.id == TrialRow.tuning_job_id)
                .group_by(TrainingJobRow.project, TrainingJobRow.display_name, TrialRow.state)
            ):
                trials.add_metric([project, job_name, state], count)
            for budget in session.scalars(select(BudgetRow)):
                if budget.limit_amount is not None:
                    budget_limit.add_metric([budget.project], budget.limit_amount)
                spent = session.scalar(
                    select(func.sum(CostRecordRow.amount)).where(
                        CostRecordRow.kind == "cluster",
                        CostRecordRow.project == budget.project,
                        CostRecordRow.end_at > budget.since,
                    )
                )
                budget_spent.add_metric([budget.project], float(spent or 0.0))
                budget_exhausted.add_metric([budget.project], 1 if budget.exhausted_at else 0)
            extra = [family for collect in self.extra for family in collect(session)]
        yield from (clusters, nodes, jobs, endpoints, deployed, cost, training, trials)
        yield from (budget_limit, budget_spent, budget_exhausted)
        yield from extra


@dataclass
class _Answer:
    """One replica's last answer, with the labels of its endpoint at that time."""

    project: str
    endpoint: str
    models: dict[str, dict[str, Any]]
    boundaries_ms: list[float]


class ServeTraffic(Collector):
    """Per endpoint and deployed model: requests by code, errors, latency, as counted by the
    endpoint ingresses (polled by ``ServeStatsPoller``). A replica's counters restart with its
    process under a new replica id, so the sum of the last answer of every replica seen never
    goes backwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str], _Answer] = {}  # (endpoint id, replica) → answer

    def record(self, endpoint_id: str, project: str, name: str, payload: dict[str, Any]) -> None:
        """Keep one ingress replica's answer to ``GET <predict_url>/stats``."""
        replica = str(payload["replica"])
        answer = _Answer(
            project,
            name,
            {str(k): dict(v) for k, v in dict(payload["models"]).items()},
            [float(b) for b in payload["boundaries_ms"]],
        )
        with self._lock:
            self._answers[(endpoint_id, replica)] = answer

    def forget_except(self, endpoint_ids: set[str]) -> None:
        """Drop endpoints that no longer exist (their series end)."""
        with self._lock:
            for key in [k for k in self._answers if k[0] not in endpoint_ids]:
                del self._answers[key]

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["project", "endpoint", "deployed_model", "model"]
        requests = CounterMetricFamily(
            "raydeck_endpoint_serve_requests",
            "Predict requests answered by endpoint ingresses (data plane), by HTTP code",
            labels=[*labels, "code"],
        )
        errors = CounterMetricFamily(
            "raydeck_endpoint_serve_errors",
            "Predict requests answered with HTTP >= 400 by endpoint ingresses (data plane)",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "raydeck_endpoint_serve_latency_seconds",
            "Predict latency measured in the endpoint ingress (data plane)",
            labels=labels,
        )
        by_code: dict[tuple[str, ...], int] = {}
        sums: dict[tuple[str, ...], tuple[int, float, list[int], list[float]]] = {}
        with self._lock:
            answers = list(self._answers.items())
        for (_, _replica), answer in answers:
            for model_id, stats in answer.models.items():
                key = (answer.project, answer.endpoint, model_id, str(stats.get("model", "")))
                for code, count in dict(stats.get("by_code", {})).items():
                    code_key = (*key, str(code))
                    by_code[code_key] = by_code.get(code_key, 0) + int(count)
                errs, total, buckets, bounds = sums.get(key, (0, 0.0, [], answer.boundaries_ms))
                new = [int(n) for n in stats.get("latency_buckets", [])]
                if len(buckets) < len(new):
                    buckets = buckets + [0] * (len(new) - len(buckets))
                buckets = [a + (new[i] if i < len(new) else 0) for i, a in enumerate(buckets)]
                sums[key] = (
                    errs + int(stats.get("errors", 0)),
                    total + float(stats.get("latency_ms_total", 0.0)) / 1000,
                    buckets,
                    bounds,
                )
        for series, count in sorted(by_code.items()):
            requests.add_metric(list(series), count)
        for series, (errs, total, buckets, bounds) in sorted(sums.items()):
            errors.add_metric(list(series), errs)
            cumulative: list[tuple[str, float]] = []
            running = 0
            for i, bound in enumerate(bounds):
                running += buckets[i] if i < len(buckets) else 0
                le = floatToGoString(bound / 1000)  # type: ignore[no-untyped-call]
                cumulative.append((le, float(running)))
            cumulative.append(("+Inf", float(sum(buckets))))
            latency.add_metric(list(series), buckets=cumulative, sum_value=total)
        yield from (requests, errors, latency)


class MetricsMiddleware:
    """Counts every HTTP request by method, route template (not raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", "GET"))
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_latency.labels(method, template).observe(time.perf_counter() - start)
