"""raydeck logs <kind>/<name> [--follow]"""

from __future__ import annotations

from typing import Annotated

import typer

from raydeck.cli.output import console
from raydeck.client import RaydeckClient
from raydeck.core.errors import NotFoundError
from raydeck.core.models.jobs import TERMINAL_JOB_STATES
from raydeck.core.models.operations import LogEntry

__all__ = ["logs"]

_COLOURS = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "red"}
# Polls after a job ended before --follow stops: the collector may still be storing its tail.
_DRAIN_POLLS = 3


def _print(entry: LogEntry) -> None:
    colour = _COLOURS.get(entry.severity.value, "")
    stamp = entry.time.strftime("%Y-%m-%d %H:%M:%S")
    head = f"{stamp} {entry.severity.value:<7} {entry.source}"
    console.print(f"[{colour}]{head}[/{colour}]" if colour else head, end=" ", highlight=False)
    console.print(entry.text, markup=False, highlight=False, soft_wrap=True)


def logs(
    resource: Annotated[
        str, typer.Argument(help="<kind>/<name>: cluster/dev, job/<id>, endpoint/churn-api")
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records.")
    ] = False,
    severity: Annotated[
        str | None, typer.Option("--severity", "-s", help="Minimum: DEBUG|INFO|WARNING|ERROR")
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, e.g. 2026-01-01T10:00Z")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time")] = None,
    text: Annotated[str | None, typer.Option("--grep", "-g", help="Substring to match.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="How many records (the newest, like tail).")
    ] = 100,
    oldest: Annotated[
        bool, typer.Option("--oldest", help="The oldest --limit records instead of the newest.")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --follow.")] = 1.0,
) -> None:
    """Collected logs of a cluster, job, endpoint or trial: the newest --limit records in time
    order (like tail; --oldest for the first ones), or --follow to keep printing new ones."""
    filters = {"severity": severity, "since": since, "until": until, "text": text}
    with RaydeckClient() as client:
        if not follow:
            page = client.logs.query(
                resource,
                page_size=limit,
                severity=severity,
                since=since,
                until=until,
                text=text,
                newest=not oldest,
            )
            for entry in page.items:
                _print(entry)
            return
        kind, _, name = resource.partition("/")
        ended = 0

        def job_ended() -> bool:
            nonlocal ended
            if kind != "job" or not name:
                return False  # clusters and endpoints are followed until Ctrl-C
            try:
                done = client.jobs.get(name).state in TERMINAL_JOB_STATES
            except NotFoundError:
                done = True
            ended = ended + 1 if done else 0
            return ended > _DRAIN_POLLS

        for entry in client.logs.follow(resource, poll=poll, stop_when=job_ended, **filters):
            _print(entry)
