"""raydeck hosts token create|list|revoke, hosts list|get|drain|delete"""

from __future__ import annotations

from typing import Annotated

import typer

from raydeck.cli.output import console, print_json, print_table
from raydeck.client import RaydeckClient
from raydeck.core.models.hosts import Host

app = typer.Typer(help="Machines that run Ray nodes (the `hosts` backend).", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens: `raydeck node join` needs one.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def create_token(
    expires_in_days: Annotated[float, typer.Option(help="Expire after N days.")] = 1,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
) -> None:
    """Create a join token (it can only register hosts); shown once."""
    with RaydeckClient() as client:
        token = client.hosts.create_join_token(
            expires_in_days=expires_in_days, description=description
        )
    console.print(
        f"join token {token.id} (expires {token.expires_at:%Y-%m-%d %H:%M} UTC); "
        "copy it now, it is shown once:"
    )
    console.print(token.secret, highlight=False, soft_wrap=True)
    console.print(
        f"on each machine: raydeck node join {client.server} --token {token.secret}",
        highlight=False,
        soft_wrap=True,
    )


@token_app.command("list")
def list_tokens() -> None:
    with RaydeckClient() as client:
        page = client.hosts.list_join_tokens()
    rows = [
        (
            t.id,
            t.prefix + "…",
            t.description,
            f"{t.expires_at:%Y-%m-%d %H:%M}",
            t.hosts_joined,
            "revoked" if t.revoked_at else "active",
        )
        for t in page.items
    ]
    print_table("join tokens", ["id", "prefix", "description", "expires", "joined", "status"], rows)


@token_app.command("revoke")
def revoke_token(token_id: str) -> None:
    with RaydeckClient() as client:
        token = client.hosts.revoke_join_token(token_id)
    console.print(f"join token {token.id} revoked")


def _resources(host: Host, free: bool) -> str:
    values = host.free_resources if free else host.resources
    return ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))


@app.command("list")
def list_hosts(
    output: Annotated[str, typer.Option("--output", "-o", help="table|json")] = "table",
) -> None:
    """Hosts with capacity, what is free, state and last heartbeat."""
    with RaydeckClient() as client:
        page = client.hosts.list()
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (
            h.name,
            h.address,
            h.state.value,
            f"{h.free_cpus:g}/{h.num_cpus:g}",
            f"{h.free_gpus:g}/{h.num_gpus:g}",
            f"{h.free_memory / 1024**3:.1f}/{h.memory / 1024**3:.1f}",
            _resources(h, free=True),
            ",".join(f"{k}={v}" for k, v in sorted(h.labels.items())),
            len(h.nodes),
            f"{h.last_seen_at:%H:%M:%S}" if h.last_seen_at else "-",
        )
        for h in page.items
    ]
    print_table(
        "hosts",
        [
            "name",
            "address",
            "state",
            "cpus free",
            "gpus free",
            "GiB free",
            "resources free",
            "labels",
            "nodes",
            "last seen",
        ],
        rows,
    )


@app.command("get")
def get_host(name: str) -> None:
    with RaydeckClient() as client:
        print_json(client.hosts.get(name))


@app.command("drain")
def drain(
    name: str,
    undo: Annotated[bool, typer.Option("--undo", help="Take new nodes again.")] = False,
) -> None:
    """Place nothing new on a host and move its clusters' workers to other hosts."""
    with RaydeckClient() as client:
        host = client.hosts.drain(name, undo=undo)
    console.print(f"host {host.name} is {host.state.value} ({len(host.nodes)} node(s) on it)")


@app.command("delete")
def delete(
    name: str,
    force: Annotated[
        bool, typer.Option("--force", help="Even while it runs nodes (they are lost).")
    ] = False,
) -> None:
    """Unregister a host (its agent's credential stops working)."""
    with RaydeckClient() as client:
        host = client.hosts.delete(name, force=force)
    console.print(f"host {host.name} deleted")
