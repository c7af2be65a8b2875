"""raydeck tokens create|list|revoke"""

from __future__ import annotations

from typing import Annotated

import typer

from raydeck.cli.output import console, print_table
from raydeck.client import RaydeckClient

app = typer.Typer(help="API tokens (admin only).", no_args_is_help=True)


@app.command("create")
def create(
    name: str,
    role: Annotated[
        str | None, typer.Option(help="admin | user | viewer | a custom role (default user)")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="Where the role applies (default: every project).")
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="Act as this existing account (its role bindings).")
    ] = None,
    expires_in_days: Annotated[int | None, typer.Option(help="Expire after N days.")] = None,
) -> None:
    """Create a token; its secret is shown once."""
    with RaydeckClient() as client:
        token = client.tokens.create(
            name,
            role=role,
            project=project,
            account=account,
            expires_in_days=expires_in_days,
        )
    console.print(
        f"token {token.name} ({token.role or token.account}) created; "
        "copy it now, it is shown once:"
    )
    console.print(token.secret, highlight=False, soft_wrap=True)


@app.command("list")
def list_tokens() -> None:
    """List tokens (never their secrets)."""
    with RaydeckClient() as client:
        page = client.tokens.list(page_size=1000)
    rows = [
        (
            t.name,
            t.account or "",
            t.role or "",
            t.prefix + "…",
            t.created_at.strftime("%Y-%m-%d %H:%M"),
            t.expires_at or "",
            "revoked" if t.revoked_at else "active",
        )
        for t in page.items
    ]
    print_table(
        "tokens", ["name", "account", "role", "prefix", "created", "expires", "status"], rows
    )


@app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a token by name or id."""
    with RaydeckClient() as client:
        token = client.tokens.revoke(name)
    console.print(f"token {token.name} revoked")
