"""Runs the MLflow mirror every RAYDECK_MLFLOW_SYNC_INTERVAL seconds, off the event loop.

Started only when RAYDECK_MLFLOW_TRACKING_URI is set. Nothing wakes it early: jobs never wait
for it, and a pass that finds nothing new costs a few queries and no request to MLflow.
"""

from __future__ import annotations

import asyncio

from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services.mlflow_mirror import MlflowMirror
from raydeck.server.state import ServerState

__all__ = ["MlflowMirrorReconciler"]


class MlflowMirrorReconciler:
    def __init__(self, state: ServerState, tracking_uri: str) -> None:
        settings = state.settings
        self.mirror = MlflowMirror(state.db, tracking_uri, token=settings.mlflow_tracking_token)
        self.loop = ReconcileLoop("mlflow-mirror", settings.mlflow_sync_interval, self.tick)

    async def tick(self) -> None:
        await asyncio.to_thread(self.mirror.sync_due)
