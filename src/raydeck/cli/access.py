"""raydeck projects|accounts|roles|bindings|audit"""

from __future__ import annotations

from typing import Annotated

import typer

from raydeck.cli.output import console, print_table
from raydeck.client import RaydeckClient

__all__ = ["accounts", "audit", "bindings", "projects", "roles"]

projects = typer.Typer(help="Projects: the tenancy boundary.", no_args_is_help=True)
accounts = typer.Typer(help="Users and service accounts (admins).", no_args_is_help=True)
roles = typer.Typer(help="Built-in and custom roles (admins).", no_args_is_help=True)
bindings = typer.Typer(help="Who has which role in which project.", no_args_is_help=True)


@projects.command("create")
def create_project(name: str, description: Annotated[str | None, typer.Option()] = None) -> None:
    with RaydeckClient() as client:
        project = client.access.create_project(name, description)
    console.print(f"project {project.name} created")


@projects.command("list")
def list_projects() -> None:
    with RaydeckClient() as client:
        page = client.access.projects()
    rows = [(p.name, p.description or "", f"{p.created_at:%Y-%m-%d %H:%M}") for p in page.items]
    print_table("projects", ["name", "description", "created"], rows)


@projects.command("delete")
def delete_project(name: str) -> None:
    with RaydeckClient() as client:
        client.access.delete_project(name)
    console.print(f"project {name} deleted")


@accounts.command("create")
def create_account(
    name: str,
    kind: Annotated[str, typer.Option(help="user | service_account")] = "user",
    display_name: Annotated[str | None, typer.Option()] = None,
) -> None:
    with RaydeckClient() as client:
        account = client.access.create_account(name, kind=kind, display_name=display_name)
    console.print(f"{account.kind.value} {account.name} created")


@accounts.command("list")
def list_accounts() -> None:
    with RaydeckClient() as client:
        page = client.access.accounts(page_size=1000)
    rows = [
        (a.name, a.kind.value, ", ".join(f"{b.role}@{b.project}" for b in a.bindings))
        for a in page.items
    ]
    print_table("accounts", ["name", "kind", "roles"], rows)


@accounts.command("delete")
def delete_account(name: str) -> None:
    with RaydeckClient() as client:
        client.access.delete_account(name)
    console.print(f"account {name} and its tokens deleted")


@roles.command("create")
def create_role(
    name: str,
    permission: Annotated[
        list[str], typer.Option("--permission", "-p", help="e.g. endpoints.predict, jobs.*")
    ],
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    with RaydeckClient() as client:
        role = client.access.create_role(name, permission, description)
    console.print(f"role {role.name}: {', '.join(role.permissions)}")


@roles.command("list")
def list_roles() -> None:
    with RaydeckClient() as client:
        page = client.access.roles()
    rows = [
        (r.name, "built-in" if r.builtin else "custom", " ".join(r.permissions)) for r in page.items
    ]
    print_table("roles", ["name", "kind", "permissions"], rows)


@roles.command("delete")
def delete_role(name: str) -> None:
    with RaydeckClient() as client:
        client.access.delete_role(name)
    console.print(f"role {name} deleted")


@bindings.command("create")
def create_binding(
    account: str,
    role: str,
    project: Annotated[str, typer.Option(help="Project, or '*' for every project.")] = "default",
) -> None:
    with RaydeckClient() as client:
        binding = client.access.bind(account, role, project)
    console.print(f"{binding.account} is {binding.role} in {binding.project} ({binding.id})")


@bindings.command("list")
def list_bindings(project: Annotated[str | None, typer.Option()] = None) -> None:
    with RaydeckClient() as client:
        page = client.access.bindings(project)
    rows = [(b.id, b.account, b.role, b.project) for b in page.items]
    print_table("role bindings", ["id", "account", "role", "project"], rows)


@bindings.command("delete")
def delete_binding(binding_id: str) -> None:
    with RaydeckClient() as client:
        client.access.unbind(binding_id)
    console.print(f"binding {binding_id} removed")


def audit(
    actor: Annotated[str | None, typer.Option(help="Account name, or 'system'.")] = None,
    action: Annotated[str | None, typer.Option(help="Permission prefix, e.g. clusters.")] = None,
    project: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="ISO time")] = None,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    """The audit log: every mutation, who did it, when and how it ended (admins)."""
    with RaydeckClient() as client:
        page = client.access.audit(
            actor=actor, action=action, project=project, since=since, page_size=limit
        )
    rows = [
        (
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            e.actor,
            e.project or "",
            e.action,
            f"{e.method} {e.path}",
            e.outcome,
        )
        for e in page.items
    ]
    print_table("audit log", ["time", "actor", "project", "action", "request", "outcome"], rows)
