"""raydeck clusters create|list|get|scale|delete"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from raydeck.cli.output import console, print_json, print_table, wait_with_progress
from raydeck.client import RaydeckClient
from raydeck.core.errors import InvalidArgumentError, NotFoundError
from raydeck.core.models import Cluster, ClusterCreate, ClusterState

app = typer.Typer(help="Create, inspect, resize and delete Ray clusters.", no_args_is_help=True)

_POOL_KEYS = {
    "name": "name",
    "replicas": "replica_count",
    "min": "min_replica_count",
    "max": "max_replica_count",
    "cpus": "num_cpus",
    "gpus": "num_gpus",
    "memory": "memory",
    "machine-type": "machine_type",
    "placement": "placement",
}


def parse_pool(text: str) -> dict[str, Any]:
    """``name=workers,replicas=2,cpus=1,resource.accel=1,min=1,max=4`` → pool dict."""
    pool: dict[str, Any] = {}
    resources: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgumentError(
                f"--pool item {item!r} must look like key=value", field="pool"
            )
        if key.startswith("resource."):
            resources[key.removeprefix("resource.")] = float(value)
        elif key in _POOL_KEYS:
            pool[_POOL_KEYS[key]] = value
        else:
            known = ", ".join([*_POOL_KEYS, "resource.<name>"])
            raise InvalidArgumentError(f"unknown --pool key {key!r} (known: {known})", field="pool")
    if resources:
        pool["resources"] = resources
    return pool


def _wait_running(client: RaydeckClient, name: str, timeout: float) -> Cluster:
    cluster = wait_with_progress(
        f"cluster {name}",
        lambda: client.clusters.get(name),
        lambda c: c.state in (ClusterState.RUNNING, ClusterState.ERROR),
        lambda c: c.state.value,
        timeout=timeout,
    )
    if cluster.state is ClusterState.ERROR:
        raise InvalidArgumentError(f"cluster {name!r} failed: {cluster.state_reason}")
    return cluster


def _show(cluster: Cluster) -> None:
    console.print(
        f"[bold]{cluster.name}[/bold] {cluster.state.value}"
        + (f" ({cluster.state_reason})" if cluster.state_reason else "")
    )
    console.print(f"  dashboard: {cluster.dashboard_url or '-'}")
    console.print(f"  connect:   ray.init('raydeck://{cluster.name}')")
    rows = [
        ("head", 1, 1, "", "", cluster.head.num_cpus, cluster.head.num_gpus, cluster.head.resources)
    ] + [
        (
            p.name,
            p.replica_count,
            p.current_replica_count,
            p.min_replica_count or "",
            p.max_replica_count or "",
            p.num_cpus,
            p.num_gpus,
            p.resources or "",
        )
        for p in cluster.worker_pools
    ]
    print_table(
        "pools", ["pool", "target", "running", "min", "max", "cpus", "gpus", "resources"], rows
    )


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Cluster name (lowercase, digits, '-').")],
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool", "-p", help="name=...,replicas=N,cpus=N,gpus=N,min=N,max=N,resource.X=N"
        ),
    ] = None,
    head_cpus: Annotated[float, typer.Option(help="CPUs the head offers to tasks.")] = 1,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="YAML/JSON cluster spec.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="local | hosts (default: the server's default).")
    ] = None,
    spread: Annotated[
        bool, typer.Option("--spread", help="hosts: each pool's replicas on different hosts.")
    ] = False,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="hosts: only on these hosts.")
    ] = None,
    host_label: Annotated[
        list[str] | None, typer.Option("--host-label", help="hosts: only on hosts with key=value.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until RUNNING.")] = True,
    timeout: float = 300,
    output: Annotated[str, typer.Option("--output", "-o", help="table|json")] = "table",
) -> None:
    """Create a cluster: a head plus worker pools."""
    spec: dict[str, Any] = yaml.safe_load(file.read_text()) if file else {}
    spec["name"] = name
    spec.setdefault("head", {}).setdefault("num_cpus", head_cpus)
    if pool:
        spec["worker_pools"] = [parse_pool(p) for p in pool]
    if label:
        spec["labels"] = dict(item.partition("=")[::2] for item in label)
    if backend:
        spec["backend"] = backend
    _apply_placement(spec, spread, host or [], host_label or [])
    request = _validated(spec, from_flags=bool(pool) and file is None)
    with RaydeckClient() as client:
        cluster = client.clusters.create(request)
        if wait:
            cluster = _wait_running(client, name, timeout)
    print_json(cluster) if output == "json" else _show(cluster)


_CLI_KEYS = {field: key for key, field in _POOL_KEYS.items()}


def _validated(spec: dict[str, Any], *, from_flags: bool) -> ClusterCreate:
    """The spec as a ClusterCreate; a bad ``--pool`` value is named as the user typed it
    (``--pool #1 replicas``), not as the API field (``worker_pools.0.replica_count``)."""
    try:
        return ClusterCreate.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        if not from_flags or len(loc) < 3 or loc[0] != "worker_pools" or not loc[1].isdigit():
            raise
        key = _CLI_KEYS.get(loc[2], loc[2])
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidArgumentError(
            f"--pool #{int(loc[1]) + 1} {key}={first.get('input')!r}: {message}", field="pool"
        ) from None


def _apply_placement(
    spec: dict[str, Any], spread: bool, hosts: list[str], host_labels: list[str]
) -> None:
    labels = dict(item.partition("=")[::2] for item in host_labels)
    for target in [spec["head"], *spec.get("worker_pools", [])]:
        if hosts:
            target.setdefault("hosts", hosts)
        if labels:
            target.setdefault("host_labels", labels)
    if spread:
        for worker_pool in spec.get("worker_pools", []):
            worker_pool.setdefault("placement", "spread")


@app.command("repair")
def repair(
    name: str,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 300,
) -> None:
    """Start a cluster in ERROR over again (e.g. on other hosts after its head's host died)."""
    with RaydeckClient() as client:
        client.clusters.repair(name)
        cluster = _wait_running(client, name, timeout) if wait else client.clusters.get(name)
    _show(cluster)


@app.command("list")
def list_clusters(
    state: Annotated[ClusterState | None, typer.Option(help="Only clusters in this state.")] = None,
    label: Annotated[str | None, typer.Option(help="key=value")] = None,
    output: Annotated[str, typer.Option("--output", "-o")] = "table",
) -> None:
    """List clusters."""
    with RaydeckClient() as client:
        page = client.clusters.list(state=state, label=label, page_size=1000)
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (
            c.name,
            c.state.value,
            ", ".join(
                f"{p.name}:{p.current_replica_count}/{p.replica_count}" for p in c.worker_pools
            ),
            c.dashboard_url,
            c.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for c in page.items
    ]
    print_table(
        "clusters", ["name", "state", "pools (running/target)", "dashboard", "created"], rows
    )


@app.command("get")
def get(name: str, output: Annotated[str, typer.Option("--output", "-o")] = "table") -> None:
    """Show one cluster."""
    with RaydeckClient() as client:
        cluster = client.clusters.get(name)
    print_json(cluster) if output == "json" else _show(cluster)


@app.command("scale")
def scale(
    name: str,
    pool: Annotated[str, typer.Option("--pool", "-p", help="Worker pool to resize.")],
    replicas: Annotated[int, typer.Option("--replicas", "-r", help="New replica count.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 300,
) -> None:
    """Change a worker pool's replica count."""
    with RaydeckClient() as client:
        client.clusters.scale(name, pool, replicas)
        cluster = _wait_running(client, name, timeout) if wait else client.clusters.get(name)
    _show(cluster)


@app.command("delete")
def delete(
    name: str,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 120,
) -> None:
    """Stop every process of a cluster and forget it."""
    with RaydeckClient() as client:
        client.clusters.delete(name)
        if wait:

            def state() -> str:
                try:
                    return client.clusters.get(name).state.value
                except NotFoundError:
                    return "DELETED"

            wait_with_progress(
                f"deleting {name}", state, lambda s: s == "DELETED", str, timeout=timeout
            )
    console.print(f"cluster {name} deleted" if wait else f"cluster {name} is stopping")
