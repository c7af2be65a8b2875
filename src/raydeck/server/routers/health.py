"""Unauthenticated liveness probe."""

from __future__ import annotations

from fastapi import APIRouter

from raydeck.server.state import RAY_VERSION

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok", "ray_version": RAY_VERSION}
