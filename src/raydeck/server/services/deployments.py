"""Which model versions endpoints serve. The registry asks before deleting artifacts.

Filled in when endpoints land; until then nothing is deployed.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

__all__ = ["deployed_version_ids"]


def deployed_version_ids(session: Session) -> set[str]:
    """Global ids (``ModelVersion.id``, ``mv-…``) of every version some endpoint serves."""
    return set()
