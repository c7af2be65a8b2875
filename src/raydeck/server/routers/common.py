"""Shared router plumbing: DB session per request, paging parameters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from raydeck.core.models.limits import capped
from raydeck.server.state import ServerState, get_state

__all__ = ["DbSession", "PageSize", "PageToken", "State"]


def _session(
    request: Request, state: Annotated[ServerState, Depends(get_state)]
) -> Iterator[Session]:
    with state.db.session() as session:
        yield session
    # Committed: let the reconcilers act on the new desired state now, not at their next tick.
    if request.method != "GET":
        state.wake_reconcilers()


# scope="function": commit before the response is sent, so a 2xx means "stored".
DbSession = Annotated[Session, Depends(_session, scope="function")]
State = Annotated[ServerState, Depends(get_state)]
PageSize = Annotated[int, Query(ge=1), capped("max_page_size")]
PageToken = Annotated[str | None, Query()]
