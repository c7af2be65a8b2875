"""Entry point: ``raydeck <group> <command>``. Errors print one line, never a traceback."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.markup import escape

from raydeck.cli import (
    access,
    batch_predictions,
    billing,
    clusters,
    custom_jobs,
    data,
    endpoints,
    hosts,
    jobs,
    logs,
    models,
    node,
    pipelines,
    server,
    tokens,
    top,
    tuning_jobs,
)
from raydeck.cli.output import err_console
from raydeck.core.errors import RaydeckError

__all__ = ["app", "main"]

app = typer.Typer(
    name="raydeck",
    help="Raydeck: Ray clusters, jobs and models on infrastructure you own.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(clusters.app, name="clusters")
app.add_typer(jobs.app, name="jobs")
app.add_typer(tokens.app, name="tokens")
app.add_typer(models.app, name="models")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(batch_predictions.app, name="batch-predict")
app.add_typer(billing.app, name="billing")
app.add_typer(access.projects, name="projects")
app.add_typer(access.accounts, name="accounts")
app.add_typer(access.roles, name="roles")
app.add_typer(access.bindings, name="bindings")
app.command("audit")(access.audit)
app.command("logs")(logs.logs)
app.command("top")(top.top)
app.add_typer(data.app, name="data")
app.add_typer(custom_jobs.app, name="custom-jobs")
app.add_typer(tuning_jobs.app, name="hpt")
app.add_typer(pipelines.app, name="pipelines")
app.command("server")(server.serve)
app.add_typer(hosts.app, name="hosts")
app.add_typer(node.app, name="node")


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "input"
    return f"{where}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}"


def main() -> None:
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except RaydeckError as exc:
        err_console.print(
            f"[red]error[/red] ({exc.code}): {escape(exc.message)}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
    except ValidationError as exc:
        message = escape(_validation_message(exc))  # patterns hold [..] that rich would eat
        err_console.print(
            f"[red]error[/red] (invalid_argument): {message}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except (TimeoutError, ValueError) as exc:
        err_console.print(f"[red]error[/red]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except (typer.Exit, typer.Abort) as exc:
        sys.exit(getattr(exc, "exit_code", 1))
    except Exception as exc:  # click usage errors and the unexpected: still one line
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        err_console.print(f"[red]error[/red]: {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 1) or 1)


if __name__ == "__main__":
    main()
