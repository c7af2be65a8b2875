"""raydeck projects|accounts|roles|bindings|audit"""

from __future__ import annotations

from typing import Annotated

import typer

from raydeck.cli.output import print_table
from raydeck.cli.resource_commands import ResourceCommands, add_resource_commands
from raydeck.client import RaydeckClient
from raydeck.core.models.access import Account, RoleBinding
from raydeck.core.models.common import Page

__all__ = ["accounts", "audit", "bindings", "projects", "roles"]

projects = typer.Typer(help="Projects: the tenancy boundary.", no_args_is_help=True)
accounts = typer.Typer(help="Users and service accounts (admins).", no_args_is_help=True)
roles = typer.Typer(help="Built-in and custom roles (admins).", no_args_is_help=True)
bindings = typer.Typer(help="Who has which role in which project.", no_args_is_help=True)


def _create_project(
    client: RaydeckClient, name: str, description: Annotated[str | None, typer.Option()] = None
) -> str:
    return f"project {client.access.create_project(name, description).name} created"


def _create_account(
    client: RaydeckClient,
    name: str,
    kind: Annotated[str, typer.Option(help="user | service_account")] = "user",
    display_name: Annotated[str | None, typer.Option()] = None,
) -> str:
    account = client.access.create_account(name, kind=kind, display_name=display_name)
    return f"{account.kind.value} {account.name} created"


def _create_role(
    client: RaydeckClient,
    name: str,
    permission: Annotated[
        list[str], typer.Option("--permission", "-p", help="e.g. endpoints.predict, jobs.*")
    ],
    description: Annotated[str | None, typer.Option()] = None,
) -> str:
    role = client.access.create_role(name, permission, description)
    return f"role {role.name}: {', '.join(role.permissions)}"


def _create_binding(
    client: RaydeckClient,
    account: str,
    role: str,
    project: Annotated[str, typer.Option(help="Project, or '*' for every project.")] = "default",
) -> str:
    binding = client.access.bind(account, role, project)
    return f"{binding.account} is {binding.role} in {binding.project} ({binding.id})"


def _list_bindings(
    client: RaydeckClient, project: Annotated[str | None, typer.Option()] = None
) -> Page[RoleBinding]:
    return client.access.bindings(project)


def _account_row(account: Account) -> tuple[str, ...]:
    roles = ", ".join(f"{b.role}@{b.project}" for b in account.bindings)
    return (account.name, account.kind.value, roles)


COMMANDS = {
    projects: ResourceCommands(
        create=_create_project,
        list=lambda client: client.access.projects(),
        title="projects",
        columns=("name", "description", "created"),
        row=lambda p: (p.name, p.description or "", f"{p.created_at:%Y-%m-%d %H:%M}"),
        delete=lambda client, name: client.access.delete_project(name),
        deleted="project {} deleted",
    ),
    accounts: ResourceCommands(
        create=_create_account,
        list=lambda client: client.access.accounts(page_size=1000),
        title="accounts",
        columns=("name", "kind", "roles"),
        row=_account_row,
        delete=lambda client, name: client.access.delete_account(name),
        deleted="account {} and its tokens deleted",
    ),
    roles: ResourceCommands(
        create=_create_role,
        list=lambda client: client.access.roles(),
        title="roles",
        columns=("name", "kind", "permissions"),
        row=lambda r: (r.name, "built-in" if r.builtin else "custom", " ".join(r.permissions)),
        delete=lambda client, name: client.access.delete_role(name),
        deleted="role {} deleted",
    ),
    bindings: ResourceCommands(
        create=_create_binding,
        list=_list_bindings,
        title="role bindings",
        columns=("id", "account", "role", "project"),
        row=lambda b: (b.id, b.account, b.role, b.project),
        delete=lambda client, binding_id: client.access.unbind(binding_id),
        deleted="binding {} removed",
        key="binding_id",
    ),
}
for group, commands in COMMANDS.items():
    add_resource_commands(group, commands)


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
