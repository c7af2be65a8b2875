"""Collected log records: store, query (resource, time, severity, text), retention, cursors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.common import Page
from raydeck.core.models.operations import LogEntry, LogResourceKind, LogSeverity
from raydeck.db.models import LogCursorRow, LogRecordRow

__all__ = [
    "LogLine",
    "enforce_retention",
    "get_cursor",
    "infer_severity",
    "line_severities",
    "parse_resource",
    "query_logs",
    "set_cursor",
    "store_lines",
]

_ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL|Traceback|Exception|Error:)", re.IGNORECASE)
_WARNING = re.compile(r"\b(WARNING|WARN)\b", re.IGNORECASE)
_DEBUG = re.compile(r"\bDEBUG\b")
_MAX_TEXT = 8000
# The level a record starts with: Python logging / Ray Serve ("ERROR 2026-12-01 10:00:00,1
# ep-1_model-dm-1 abc -- ...") and Ray's C++ daemons ("[2026-12-01 10:00:00,123 E 12 34] ...").
_PY_LEVEL = re.compile(r"^(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL) \d{4}-\d\d-\d\d")
_RAY_LEVEL = re.compile(r"^\[\d{4}-\d\d-\d\d [^\]]*? ([DIWEF]) \d+ \d+\]")
_LEVELS = {
    "DEBUG": LogSeverity.DEBUG,
    "D": LogSeverity.DEBUG,
    "INFO": LogSeverity.INFO,
    "I": LogSeverity.INFO,
    "WARNING": LogSeverity.WARNING,
    "WARN": LogSeverity.WARNING,
    "W": LogSeverity.WARNING,
}


def line_severities(lines: list[str]) -> list[LogSeverity]:
    """Severity of each line of a log file: a record's own level when the line starts one,
    else the level of the record it continues (a traceback under "ERROR ... -- predict
    failed" is ERROR), else guessed from the text (``infer_severity``)."""
    found: list[LogSeverity] = []
    current: LogSeverity | None = None
    for line in lines:
        match = _PY_LEVEL.match(line) or _RAY_LEVEL.match(line)
        if match:
            current = _LEVELS.get(match.group(1), LogSeverity.ERROR)
        found.append(current if current is not None else infer_severity(line))
    return found


def infer_severity(text: str) -> LogSeverity:
    """Ray, Python logging and tracebacks put the level in the text; default INFO."""
    if _ERROR.search(text):
        return LogSeverity.ERROR
    if _WARNING.search(text):
        return LogSeverity.WARNING
    if _DEBUG.search(text):
        return LogSeverity.DEBUG
    return LogSeverity.INFO


@dataclass(frozen=True)
class LogLine:
    project: str
    resource_kind: LogResourceKind
    resource_id: str
    resource_name: str
    source: str
    time: datetime
    text: str
    severity: LogSeverity | None = None


def store_lines(session: Session, lines: Iterable[LogLine]) -> int:
    count = 0
    for line in lines:
        text = line.text.rstrip("\r\n")
        if not text.strip():
            continue
        session.add(
            LogRecordRow(
                project=line.project,
                resource_kind=line.resource_kind.value,
                resource_id=line.resource_id,
                resource_name=line.resource_name[:128],
                source=line.source[:256],
                severity=(line.severity or infer_severity(text)).value,
                time=line.time,
                text=text[:_MAX_TEXT],
            )
        )
        count += 1
    return count


def get_cursor(session: Session, key: str) -> int:
    row = session.get(LogCursorRow, key)
    return row.position if row is not None else 0


def set_cursor(session: Session, key: str, position: int) -> None:
    row = session.get(LogCursorRow, key)
    if row is None:
        session.add(LogCursorRow(source_key=key, position=position))
    else:
        row.position = position


def parse_resource(resource: str) -> tuple[LogResourceKind, str | None]:
    """``job/<id or submission id>``, ``cluster/<name>``, ``endpoint/<name or id>``, or a kind."""
    kind, _, name = resource.partition("/")
    try:
        return LogResourceKind(kind), name or None
    except ValueError:
        kinds = ", ".join(k.value for k in LogResourceKind)
        raise InvalidArgumentError(
            f"resource must look like <kind>/<name> with kind one of {kinds}", field="resource"
        ) from None


def _to_model(row: LogRecordRow) -> LogEntry:
    return LogEntry(
        id=row.id,
        project=row.project,
        resource_kind=row.resource_kind,
        resource_id=row.resource_id,
        resource_name=row.resource_name,
        source=row.source,
        severity=LogSeverity(row.severity),
        time=row.time,
        text=row.text,
    )


def query_logs(
    session: Session,
    *,
    projects: set[str] | None,
    resource: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    severity: LogSeverity | None = None,
    text: str | None = None,
    after: int | None = None,
    page_size: int = 100,
    newest: bool = False,
) -> Page[LogEntry]:
    """Oldest first. ``after`` is an id: pass the last id seen to page on or to follow.
    ``newest``: the last ``page_size`` matching records instead of the first (like ``tail``),
    still in time order; no next page."""
    query = select(LogRecordRow)
    if projects is not None:
        query = query.where(LogRecordRow.project.in_(projects))
    if resource:
        kind, name = parse_resource(resource)
        query = query.where(LogRecordRow.resource_kind == kind.value)
        if name:
            query = query.where(
                or_(LogRecordRow.resource_id == name, LogRecordRow.resource_name == name)
            )
    if since is not None:
        query = query.where(LogRecordRow.time >= since)
    if until is not None:
        query = query.where(LogRecordRow.time < until)
    if severity is not None:
        allowed = [s.value for s in LogSeverity if s.rank >= severity.rank]
        query = query.where(LogRecordRow.severity.in_(allowed))
    if text:
        query = query.where(LogRecordRow.text.contains(text, autoescape=True))
    if after is not None:
        query = query.where(LogRecordRow.id > after)
    if newest:
        latest = session.scalars(query.order_by(LogRecordRow.id.desc()).limit(page_size))
        items = [_to_model(r) for r in reversed(list(latest))]
        return Page[LogEntry](items=items, next_page_token=None)
    rows = list(session.scalars(query.order_by(LogRecordRow.id).limit(page_size)))
    next_token = str(rows[-1].id) if len(rows) == page_size else None
    return Page[LogEntry](items=[_to_model(r) for r in rows], next_page_token=next_token)


def enforce_retention(
    session: Session, *, now: datetime, max_age: timedelta, max_bytes: int
) -> int:
    """Drop records older than ``max_age``, then the oldest until the text fits ``max_bytes``."""
    deleted = session.execute(delete(LogRecordRow).where(LogRecordRow.time < now - max_age))
    removed = int(getattr(deleted, "rowcount", 0) or 0)
    total = int(
        session.scalar(select(func.coalesce(func.sum(func.length(LogRecordRow.text)), 0))) or 0
    )
    if total <= max_bytes:
        return removed
    excess = total - max_bytes
    cutoff_id = None
    freed = 0
    for row_id, length in session.execute(
        select(LogRecordRow.id, func.length(LogRecordRow.text)).order_by(LogRecordRow.id)
    ):
        freed += int(length or 0)
        cutoff_id = row_id
        if freed >= excess:
            break
    if cutoff_id is not None:
        result = session.execute(delete(LogRecordRow).where(LogRecordRow.id <= cutoff_id))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed
