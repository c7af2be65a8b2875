"""Keyset paging over time-ordered ids (stable while rows are added)."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from raydeck.core.errors import InvalidArgumentError

__all__ = ["MAX_PAGE_SIZE", "fetch_page"]

MAX_PAGE_SIZE = 1000
RowT = TypeVar("RowT")


def _decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError("page_token is not valid", field="page_token") from exc


def fetch_page(
    session: Session, query: Select[Any], id_column: Any, page_size: int, page_token: str | None
) -> tuple[list[Any], str | None]:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(
            f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size"
        )
    if page_token:
        query = query.where(id_column > _decode(page_token))
    rows = list(session.scalars(query.order_by(id_column).limit(page_size + 1)))
    if len(rows) <= page_size:
        return rows, None
    rows = rows[:page_size]
    last_id = str(rows[-1].id)
    return rows, base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")
