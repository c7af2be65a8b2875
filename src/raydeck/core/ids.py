"""Server-generated ids: time-ordered so keyset paging by id follows creation order."""

from __future__ import annotations

import secrets
import time

__all__ = ["new_id"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() // 1000:014x}{secrets.token_hex(4)}"
