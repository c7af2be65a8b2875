"""Which model versions endpoints serve. The registry asks before deleting artifacts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.db.models import EndpointRow

__all__ = ["deployed_version_ids"]


def deployed_version_ids(session: Session) -> set[str]:
    """Global ids (``ModelVersion.id``, ``mv-…``) of every version some endpoint serves."""
    return {
        model["model_version_id"]
        for spec in session.scalars(select(EndpointRow.spec))
        for model in spec.get("deployed_models", [])
    }
