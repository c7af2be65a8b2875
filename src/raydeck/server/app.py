"""FastAPI application factory and lifespan (migrations, reconcilers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from raydeck.backends.base import ClusterBackend
from raydeck.backends.local import LocalClusterBackend
from raydeck.core.settings import Settings, get_settings
from raydeck.db.session import Database
from raydeck.server.errors import install_error_handlers
from raydeck.server.reconcilers.autoscaler import Autoscaler
from raydeck.server.reconcilers.batch_predictions import BatchPredictionReconciler
from raydeck.server.reconcilers.clusters import ClusterReconciler
from raydeck.server.reconcilers.endpoints import EndpointReconciler
from raydeck.server.reconcilers.jobs import JobReconciler
from raydeck.server.reconcilers.mlflow_mirror import MlflowMirrorReconciler
from raydeck.server.reconcilers.training import TrainingReconciler
from raydeck.server.reconcilers.training_pipelines import PipelineReconciler
from raydeck.server.routers import (
    batch_predictions,
    clusters,
    connections,
    custom_jobs,
    endpoints,
    health,
    jobs,
    models,
    ray_proxy,
    tokens,
    training_pipelines,
    tuning_jobs,
)
from raydeck.server.state import ServerState

__all__ = ["create_app", "default_backends"]


def default_backends(settings: Settings) -> dict[str, ClusterBackend]:
    return {
        "local": LocalClusterBackend(
            settings.clusters_dir,
            bind_host=settings.ray_bind_host,
            port_range=(settings.port_range_start, settings.port_range_end),
        )
    }


def create_app(
    settings: Settings | None = None,
    *,
    backends: dict[str, ClusterBackend] | None = None,
    run_reconcilers: bool = True,
) -> FastAPI:
    settings = settings or get_settings()
    db = Database(settings.db_url)
    db.migrate()
    state = ServerState(
        settings=settings,
        db=db,
        backends=backends if backends is not None else default_backends(settings),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loops = []
        if run_reconcilers:
            loops = [
                ClusterReconciler(state).loop,
                JobReconciler(state).loop,
                EndpointReconciler(state).loop,
                Autoscaler(state).loop,
                BatchPredictionReconciler(state).loop,
                TrainingReconciler(state).loop,
                PipelineReconciler(state).loop,
            ]
            if settings.mlflow_tracking_uri:  # experiment tracking, opt-in
                loops.append(MlflowMirrorReconciler(state, settings.mlflow_tracking_uri).loop)
            for loop in loops:
                loop.start()
        try:
            yield
        finally:
            for loop in loops:
                await loop.stop()
            state.wake_callbacks.clear()

    app = FastAPI(
        title="Raydeck",
        version="0.1.0",
        description="Self-hosted control plane for Ray clusters, jobs and models.",
        lifespan=lifespan,
    )
    app.state.raydeck = state
    install_error_handlers(app)
    for module in (health, tokens, clusters, jobs, ray_proxy, models, endpoints, batch_predictions):
        app.include_router(module.router)
    for module in (custom_jobs, tuning_jobs, training_pipelines):  # training (issue 5)
        app.include_router(module.router)
    app.include_router(connections.router)
    return app
