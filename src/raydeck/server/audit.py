"""Audit middleware: every mutating API request leaves one audit row, whatever its outcome.

The ``require`` dependency notes the caller and the permission on the request's state; this
middleware writes who/what/when/outcome once the response status is known, so no route has
to remember to audit itself. Denied and unauthenticated attempts are recorded too.
"""

from __future__ import annotations

import json
import logging

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raydeck.core.models import Caller
from raydeck.server.auth import CALLER_KEY, PERMISSION_KEY
from raydeck.server.services.audit import record_audit
from raydeck.server.services.roles import NON_MUTATING_VERBS
from raydeck.server.state import ServerState

__all__ = ["AuditMiddleware"]

log = logging.getLogger(__name__)

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class AuditMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in _MUTATING
            or not str(scope.get("path", "")).startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        status = 500
        error_code: str | None = None
        first_body = b""

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first_body
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not first_body and status >= 400:
                first_body = bytes(message.get("body", b""))[:4096]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if status >= 400:
                error_code = _error_code(first_body) or "error"
            await self._record(scope, status, error_code)

    async def _record(self, scope: Scope, status: int, error_code: str | None) -> None:
        request_state = scope.get("state") or {}
        permission = request_state.get(PERMISSION_KEY)
        if permission and permission.partition(".")[2] in NON_MUTATING_VERBS:
            return
        caller = request_state.get(CALLER_KEY)
        method = str(scope.get("method"))
        path = str(scope.get("path"))
        actor = (caller.account or caller.name) if isinstance(caller, Caller) else "anonymous"

        def write() -> None:
            with self.state.db.session() as session:
                record_audit(
                    session,
                    actor=actor,
                    token_id=caller.id if isinstance(caller, Caller) else None,
                    project=caller.project if isinstance(caller, Caller) else None,
                    action=permission or f"{method} {path}",
                    method=method,
                    path=path,
                    status_code=status,
                    outcome="ok" if status < 400 else (error_code or "error"),
                )

        try:
            await anyio.to_thread.run_sync(write)
        except Exception:  # the response is already sent; never fail it for the audit trail
            log.exception("could not write the audit row for %s %s", method, path)


def _error_code(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code else None
