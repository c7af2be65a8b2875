"""Console output shared by every command: tables, JSON, progress, one-line errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

__all__ = [
    "console",
    "err_console",
    "print_ids",
    "print_json",
    "print_table",
    "state_line",
    "wait_with_progress",
]

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [v.model_dump(mode="json") for v in value]
    console.print_json(json.dumps(data))


def print_ids(items: Sequence[Any]) -> None:
    """``-o id``: each item's full id on its own line (``$(raydeck … list -o id)``)."""
    for item in items:
        console.print(item.id, highlight=False, markup=False, soft_wrap=True)


def _is_id(column: str) -> bool:
    name = column.lower()
    return name in ("id", "job", "trial") or name.endswith((" id", "_id"))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Id columns are never cut (users copy them into the next command); the other columns
    wrap to fit the terminal."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        if _is_id(column):
            width = max([len(column), *(len(row[index]) for row in cells)])
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def state_line(value: object) -> str | None:
    """ "STATE: reason" of a resource with ``state`` (and ``state_reason`` or ``message``)."""
    state = getattr(value, "state", None)
    if state is None:
        return None
    text = str(getattr(state, "value", state))
    reason = getattr(value, "state_reason", None) or getattr(value, "message", None)
    return f"{text}: {reason}" if reason else text


def wait_with_progress(
    description: str,
    poll: Callable[[], T],
    done: Callable[[T], bool],
    describe: Callable[[T], str],
    *,
    timeout: float,
    interval: float = 0.5,
    milestone: Callable[[T], str | None] = state_line,
) -> T:
    """Poll until ``done``; shows a live spinner with the current state and elapsed time, and
    prints a line (on stderr) each time ``milestone`` (the state and its reason) changes, so
    what the work is waiting for shows where the user looks, on a terminal or in a log."""
    start = time.monotonic()
    last: str | None = None
    with err_console.status(description) as status:
        while True:
            value = poll()
            elapsed = time.monotonic() - start
            line = milestone(value)
            if line is not None and line != last:
                err_console.print(
                    f"{description}: {line} ({elapsed:.0f}s)", highlight=False, markup=False
                )
                last = line
            status.update(f"{description}: {describe(value)} ({elapsed:.1f}s)")
            if done(value):
                return value
            if elapsed > timeout:
                raise TimeoutError(f"{description}: still {describe(value)} after {timeout:.0f}s")
            time.sleep(interval)
