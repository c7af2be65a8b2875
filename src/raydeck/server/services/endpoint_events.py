"""What the control plane sees of endpoint traffic: predict outcomes as metrics, failures
as ERROR log records of the endpoint (so `raydeck logs endpoint/<name>` shows them)."""

from __future__ import annotations

import json

from raydeck.core.errors import NotFoundError
from raydeck.core.models.operations import LogResourceKind, LogSeverity
from raydeck.server.services import endpoints as endpoint_service
from raydeck.server.services.logs import LogLine, store_lines
from raydeck.server.state import ServerState

__all__ = ["record_prediction"]


def record_prediction(
    state: ServerState,
    endpoint: str,
    project: str,
    action: str,
    status: int,
    seconds: float,
    body: bytes | None,
    error: str | None = None,
) -> None:
    """Count one relayed predict call; store a log record when it failed."""
    deployed_model, model = "none", "none"
    if body and status < 400:
        try:
            answer = json.loads(body)
            deployed_model = str(answer.get("deployed_model_id") or "none")
            model = str(answer.get("model") or "none")
        except (ValueError, AttributeError):
            pass
    with state.db.session() as session:
        try:
            row = endpoint_service.get_endpoint_row(session, endpoint, project)
        except NotFoundError:
            return  # nothing to attribute to; the caller already got its 404
        metrics = state.metrics
        labels = (row.project, row.name, deployed_model)
        metrics.predictions.labels(*labels, model, str(status)).inc()
        metrics.prediction_latency.labels(*labels).observe(seconds)
        if status < 400:
            return
        metrics.prediction_errors.labels(*labels).inc()
        detail = error or (body or b"").decode("utf-8", errors="replace")[:2000]
        store_lines(
            session,
            [
                LogLine(
                    row.project,
                    LogResourceKind.ENDPOINT,
                    row.id,
                    row.name,
                    "predict",
                    state.clock(),
                    f"{action} failed with HTTP {status}: {detail}",
                    LogSeverity.ERROR,
                )
            ],
        )
