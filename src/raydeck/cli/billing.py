"""raydeck billing report|budget"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from raydeck.cli.output import console, print_json, print_table
from raydeck.client import RaydeckClient
from raydeck.core.models.operations import Budget, BudgetUpdate

app = typer.Typer(help="Cost reports and budgets.", no_args_is_help=True)


@app.command("report")
def report(
    by: Annotated[str, typer.Option(help="project | cluster | job | endpoint")] = "project",
    since: Annotated[str | None, typer.Option(help="ISO time, e.g. 2026-01-01")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time")] = None,
    all_projects: Annotated[bool, typer.Option(help="Every project (admins).")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Accrued cost grouped by project, cluster, job or endpoint."""
    with RaydeckClient() as client:
        result = client.billing.report(by, since=since, until=until, all_projects=all_projects)
    if json:
        print_json(result)
        return
    by_project = result.by.value == "project"
    # Clusters and endpoints go by name (a deleted "dev" and the live one differ by id and
    # dates); jobs go by their Raydeck id (job-…, bpj-…, cj-…), so no id column repeats it.
    with_id = result.by.value in ("cluster", "endpoint")
    columns = [
        result.by.value,
        *(["id"] if with_id else []),
        *([] if by_project else ["project"]),
        "from",
        "to",
        "amount",
        "node-hours",
    ]
    rows = [
        (
            r.name,
            *([r.key] if with_id else []),
            *([] if by_project else [r.project]),
            _when(r.first),
            _when(r.last),
            f"{r.amount:.4f}",
            f"{r.node_seconds / 3600:.2f}",
        )
        for r in result.rows
    ]
    title = f"cost by {result.by.value} ({result.currency})"
    print_table(title, columns, rows)
    console.print(f"total: {result.total:.4f} {result.currency}")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _show(budget: Budget) -> None:
    console.print(
        f"project {budget.project}: spent {budget.spent:.4f} {budget.currency} since "
        f"{budget.since:%Y-%m-%d %H:%M}; alert at {budget.alert_amount}, "
        f"limit {budget.limit_amount}",
        highlight=False,
    )
    if budget.exhausted_at:
        console.print(f"[red]limit reached at {budget.exhausted_at:%Y-%m-%d %H:%M}[/red]")
    elif budget.alerted_at:
        console.print(f"[yellow]alert sent at {budget.alerted_at:%Y-%m-%d %H:%M}[/yellow]")


@app.command("budget")
def budget(
    project: Annotated[str, typer.Argument(help="Project name.")],
    alert: Annotated[float | None, typer.Option(help="Alert threshold (amount).")] = None,
    limit: Annotated[float | None, typer.Option(help="Hard limit: stops work.")] = None,
    webhook: Annotated[str | None, typer.Option(help="URL POSTed on each threshold.")] = None,
    since: Annotated[str | None, typer.Option(help="Count spend from (ISO time).")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the budget.")] = False,
) -> None:
    """Show a project's budget; with --alert/--limit set it (admins)."""
    with RaydeckClient() as client:
        if delete:
            removed = client.billing.delete_budget(project)
            console.print(f"budget of {removed.project} removed")
            return
        if alert is None and limit is None:
            _show(client.billing.get_budget(project))
            return
        request = BudgetUpdate.model_validate(
            {"alert_amount": alert, "limit_amount": limit, "webhook_url": webhook, "since": since}
        )
        _show(client.billing.set_budget(project, request))
