"""Audit middleware: every mutating API request leaves one audit row, whatever its outcome.

The ``require`` dependency notes the caller and the permission on the request's state; this
middleware writes who/what/when/outcome once the response status is known, so no route has
to remember to audit itself. Denied and unauthenticated attempts are recorded too, but
unauthenticated ones (no valid token: anyone can send them) are aggregated so that a flood
cannot grow the log: one row per source address and action per
``RAYDECK_AUDIT_ANONYMOUS_WINDOW`` seconds, whose ``detail`` counts the attempts (written at
most every 2 s, so a count can lag by the attempts of the last 2 s of a flood).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raydeck.core.ids import new_id
from raydeck.core.models import Caller
from raydeck.server.auth import CALLER_KEY, PERMISSION_KEY
from raydeck.server.services.audit import record_audit, set_attempts
from raydeck.server.services.roles import NON_MUTATING_VERBS
from raydeck.server.state import ServerState

__all__ = ["AuditMiddleware"]

log = logging.getLogger(__name__)

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Anonymous attempts tracked at once; beyond this, finished windows are dropped first.
_MAX_TRACKED = 10_000
# A window's row is brought up to date at most this often (and when the window ends).
_COUNT_FLUSH_SECONDS = 2.0


@dataclass
class _Window:
    row_id: str
    started: float
    count: int = 1
    flushed_count: int = 1
    flushed_at: float = 0.0


class AnonymousAttempts:
    """Per (source, action): which audit row the current window's attempts are counted in.
    ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.window_seconds = window_seconds
        self.clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def note(self, key: tuple[str, str]) -> tuple[_Window | None, _Window | None]:
        """(window counting this attempt, or None: start a new row; a window that just
        ended and still has counts to write, or None)."""
        now = self.clock()
        current = self._windows.get(key)
        if current is not None and now - current.started < self.window_seconds:
            current.count += 1
            return current, None
        if len(self._windows) >= _MAX_TRACKED:
            self._prune(now)
        self._windows.pop(key, None)
        ended = current if current is not None and current.count > current.flushed_count else None
        return None, ended

    def start(self, key: tuple[str, str], row_id: str) -> None:
        now = self.clock()
        self._windows[key] = _Window(row_id=row_id, started=now, flushed_at=now)

    def pending(self) -> list[_Window]:
        """Windows with attempts their row does not show yet (written with the next row)."""
        return [w for w in self._windows.values() if w.count > w.flushed_count]

    def due(self, window: _Window) -> bool:
        return self.clock() - window.flushed_at >= _COUNT_FLUSH_SECONDS

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now - w.started >= self.window_seconds]:
            del self._windows[key]
        while len(self._windows) >= _MAX_TRACKED:  # all live: the oldest stops aggregating
            del self._windows[next(iter(self._windows))]


class AuditMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.anonymous = AnonymousAttempts(state.settings.audit_anonymous_window)

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
        if not isinstance(caller, Caller):
            client = scope.get("client")
            source = str(client[0]) if client else "unknown"
            outcome = "ok" if status < 400 else (error_code or "error")
            await self._record_anonymous(
                (source, permission or method),
                permission or f"{method} {path}",
                scope,
                status,
                outcome,
            )
            return

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

    async def _record_anonymous(
        self, key: tuple[str, str], action: str, scope: Scope, status: int, outcome: str
    ) -> None:
        window, ended = self.anonymous.note(key)
        if window is not None and not self.anonymous.due(window):
            return  # counted; the row catches up on a later attempt or when the window ends
        new_row = None
        if window is None:  # claimed before any await, so concurrent attempts count in it
            new_row = new_id("aud")
            self.anonymous.start(key, new_row)
        method, path = str(scope.get("method")), str(scope.get("path"))

        def write() -> None:
            with self.state.db.session() as session:
                for finished in (ended, window, *self.anonymous.pending()):
                    if finished is not None and finished.count > finished.flushed_count:
                        set_attempts(session, finished.row_id, finished.count)
                        finished.flushed_count = finished.count
                        finished.flushed_at = self.anonymous.clock()
                if new_row is not None:
                    record_audit(
                        session,
                        actor="anonymous",
                        action=action,
                        method=method,
                        path=path,
                        status_code=status,
                        outcome=outcome,
                        detail=f"source {key[0]}: 1 attempt",
                        row_id=new_row,
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
