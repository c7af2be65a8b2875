"""raydeck data connections|datasets|tables|describe|preview|query|load

Secrets are read from standard input (``--secret-stdin``), never from the command line, and
never printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from raydeck.cli.output import console, print_json, print_table
from raydeck.client import RaydeckClient
from raydeck.core.models.warehouse import (
    Connection,
    ConnectionCreate,
    ConnectionKind,
    FileFormat,
    LoadFormat,
    QueryResult,
    TableInfo,
    WriteMode,
)

__all__ = ["app"]

app = typer.Typer(help="Warehouse connections, tables and read-only queries.", no_args_is_help=True)
connections_app = typer.Typer(help="Register, list and delete connections.", no_args_is_help=True)
app.add_typer(connections_app, name="connections")

Output = Annotated[str, typer.Option("--output", "-o", help="table|json")]


def _location(c: Connection) -> str:
    if c.kind is ConnectionKind.BIGQUERY:
        return f"{c.project}.{c.dataset or '*'}"
    return c.path or c.url or c.root or "-"


def _secret(c: Connection) -> str:
    if c.has_secret:
        return "stored (encrypted)"
    return f"${c.secret_env}" if c.secret_env else "-"


@connections_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Connection name.")],
    kind: Annotated[ConnectionKind, typer.Option("--kind", "-k")],
    path: Annotated[str | None, typer.Option(help="duckdb: database file.")] = None,
    url: Annotated[str | None, typer.Option(help="sql: SQLAlchemy URL.")] = None,
    root: Annotated[str | None, typer.Option(help="files: directory or URI.")] = None,
    file_format: Annotated[FileFormat | None, typer.Option("--format")] = None,
    project: Annotated[str | None, typer.Option(help="bigquery: project id.")] = None,
    dataset: Annotated[str | None, typer.Option(help="bigquery: default dataset.")] = None,
    api_endpoint: Annotated[str | None, typer.Option(help="bigquery: API root.")] = None,
    secret_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the secret on clusters.")
    ] = None,
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the secret from standard input.")
    ] = False,
    description: Annotated[str | None, typer.Option()] = None,
    output: Output = "table",
) -> None:
    secret = sys.stdin.read().strip() if secret_stdin else None
    if secret_stdin and not secret:  # e.g. `echo "$UNSET_VAR" | …`: never store "no secret"
        raise typer.BadParameter(
            "standard input was empty; pipe the secret in, or leave out --secret-stdin",
            param_hint="--secret-stdin",
        )
    request = ConnectionCreate.model_validate(
        {
            "name": name,
            "kind": kind,
            "path": path,
            "url": url,
            "root": root,
            "format": file_format,
            "project": project,
            "dataset": dataset,
            "api_endpoint": api_endpoint,
            "secret": secret,
            "secret_env": secret_env,
            "description": description,
        }
    )
    with RaydeckClient() as client:
        created = client.connections.create(request)
    if output == "json":
        print_json(created)
        return
    console.print(f"created {created.kind.value} connection [bold]{created.name}[/bold]")
    console.print(f"  location: {_location(created)}", highlight=False)
    console.print(f"  secret:   {_secret(created)}", highlight=False)


@connections_app.command("list")
def list_connections(
    kind: Annotated[ConnectionKind | None, typer.Option("--kind", "-k")] = None,
    output: Output = "table",
) -> None:
    with RaydeckClient() as client:
        page = client.connections.list(kind=kind.value if kind else None, page_size=1000)
    if output == "json":
        print_json(page.items)
        return
    rows = [(c.name, c.kind.value, _location(c), _secret(c)) for c in page.items]
    print_table("Connections", ["name", "kind", "location", "secret"], rows)


@connections_app.command("get")
def get(name: str, output: Output = "table") -> None:
    with RaydeckClient() as client:
        connection = client.connections.get(name)
    if output == "json":
        print_json(connection)
        return
    console.print(f"[bold]{connection.name}[/bold] {connection.kind.value} ({connection.id})")
    console.print(f"  location: {_location(connection)}", highlight=False)
    console.print(f"  secret:   {_secret(connection)}", highlight=False)


@connections_app.command("delete")
def delete(name: str) -> None:
    """Forget a connection (its tables are not touched)."""
    with RaydeckClient() as client:
        client.connections.delete(name)
    console.print(f"deleted connection {name}")


@app.command("datasets")
def datasets(connection: str, output: Output = "table") -> None:
    with RaydeckClient() as client:
        found = client.connections.datasets(connection)
    if output == "json":
        print_json(found)
        return
    print_table(f"Datasets of {connection}", ["dataset"], [(d.name,) for d in found])


def _columns(table: TableInfo) -> str:
    return ", ".join(f"{c.name} {c.type}" for c in table.columns)


@app.command("tables")
def tables(
    connection: str,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d")] = None,
    output: Output = "table",
) -> None:
    """Tables with their schemas and row counts."""
    with RaydeckClient() as client:
        found = client.connections.tables(connection, dataset)
    if output == "json":
        print_json(found)
        return
    rows = [(t.ref, "?" if t.row_count is None else f"{t.row_count}", _columns(t)) for t in found]
    print_table(f"Tables of {connection}", ["table", "rows", "columns"], rows)


@app.command("describe")
def describe(
    table: Annotated[str, typer.Argument(help="conn.dataset.table")], output: Output = "table"
) -> None:
    with RaydeckClient() as client:
        info = client.connections.table(table)
    if output == "json":
        print_json(info)
        return
    rows = "?" if info.row_count is None else f"{info.row_count}"
    console.print(f"[bold]{info.ref}[/bold] {rows} rows", highlight=False)
    print_table(
        "", ["column", "type", "nullable"], [(c.name, c.type, c.nullable) for c in info.columns]
    )


def _show_result(result: QueryResult, output: str) -> None:
    if output == "json":
        print_json(result)
        return
    print_table("", [c.name for c in result.columns], result.rows)
    more = " (more rows not shown; raise --limit)" if result.truncated else ""
    console.print(f"{result.row_count} row(s){more}", highlight=False)


@app.command("preview")
def preview(
    table: Annotated[str, typer.Argument(help="conn.dataset.table")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    output: Output = "table",
) -> None:
    with RaydeckClient() as client:
        _show_result(client.connections.preview(table, limit=limit), output)


@app.command("query")
def query(
    connection: str,
    sql: Annotated[str, typer.Argument(help="One read-only statement (SELECT/WITH).")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 100,
    output: Output = "table",
) -> None:
    """Run a read-only query in the warehouse."""
    with RaydeckClient() as client:
        _show_result(client.connections.query(connection, sql, limit=limit), output)


@app.command("load")
def load(
    table: Annotated[str, typer.Argument(help="conn.dataset.table (or conn.table)")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A .csv, .parquet or .jsonl file.")
    ],
    mode: Annotated[
        WriteMode, typer.Option("--mode", help="create (new table), append or overwrite.")
    ] = WriteMode.CREATE,
    file_format: Annotated[
        LoadFormat | None,
        typer.Option("--format", help="File format (default: from the file's extension)."),
    ] = None,
) -> None:
    """Load a CSV (with a header row), Parquet or JSONL file into a warehouse table, staged
    and committed at once (a failure leaves the table as it was)."""
    with RaydeckClient() as client:
        result = client.connections.load_table(
            table, file, mode=mode, format=file_format.value if file_format else None
        )
    console.print(
        f"loaded {result.rows_written} rows into {result.table} ({result.mode.value})",
        highlight=False,
    )
