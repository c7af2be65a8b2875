"""/api/v1/tokens"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from raydeck.core.models import Caller, Page, Token, TokenCreate, TokenCreated
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken
from raydeck.server.services import tokens as service

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post("", status_code=201)
def create_token(
    body: TokenCreate,
    session: DbSession,
    _: Annotated[Principal, Depends(require("tokens.create"))],
) -> TokenCreated:
    return service.create_token(session, body)


@router.get("")
def list_tokens(
    session: DbSession,
    _: Annotated[Principal, Depends(require("tokens.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> Page[Token]:
    return service.list_tokens(session, page_size, page_token)


@router.delete("/{token}")
def revoke_token(
    token: str, session: DbSession, _: Annotated[Principal, Depends(require("tokens.delete"))]
) -> Token:
    return service.revoke_token(session, token)


@router.get("/self", tags=["tokens"])
def whoami(principal: Annotated[Principal, Depends(require("tokens_self.get"))]) -> Caller:
    """The calling token, its account, and that account's roles in the request's project."""
    return principal
