"""raydeck endpoints create|list|get|deploy|undeploy|traffic|predict|delete"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from raydeck.cli.output import console, print_json, print_table, wait_with_progress
from raydeck.client import RaydeckClient
from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from raydeck.core.models import Endpoint, EndpointState

app = typer.Typer(help="Serve model versions on a cluster and predict.", no_args_is_help=True)


def _show(endpoint: Endpoint) -> None:
    reason = f" ({endpoint.state_reason})" if endpoint.state_reason else ""
    console.print(f"[bold]{endpoint.display_name}[/bold] {endpoint.state.value}{reason}")
    console.print(f"  id: {endpoint.id}  cluster: {endpoint.cluster}")
    if endpoint.predict_url:
        console.print(f"  predict: POST {endpoint.predict_url}/predict", highlight=False)
    else:
        console.print("  predict: (a URL once a model is deployed)", highlight=False)
    rows = [
        (
            m.id,
            f"{m.model}@{m.version_id}",
            m.framework,
            endpoint.traffic_split.get(m.id, 0),
            f"{m.min_replica_count}..{m.max_replica_count}",
            "on" if m.batching else "off",
        )
        for m in endpoint.deployed_models
    ]
    print_table(
        "deployed models", ["id", "model", "framework", "traffic %", "replicas", "batching"], rows
    )


def _wait_ready(client: RaydeckClient, name: str, timeout: float) -> Endpoint:
    endpoint = wait_with_progress(
        f"endpoint {name}",
        lambda: client.endpoints.get(name),
        lambda e: e.state in (EndpointState.READY, EndpointState.FAILED),
        lambda e: e.state.value,
        timeout=timeout,
    )
    if endpoint.state is EndpointState.FAILED:
        raise FailedPreconditionError(f"endpoint {name!r} failed: {endpoint.state_reason}")
    return endpoint


@app.command("create")
def create(name: str, cluster: Annotated[str, typer.Option("--cluster", "-c")]) -> None:
    """Create an (empty) endpoint on a cluster."""
    with RaydeckClient() as client:
        _show(client.endpoints.create(name, cluster=cluster))


@app.command("list")
def list_endpoints(
    cluster: Annotated[str | None, typer.Option("--cluster", "-c")] = None,
    output: Annotated[str, typer.Option("--output", "-o")] = "table",
) -> None:
    """List endpoints."""
    with RaydeckClient() as client:
        page = client.endpoints.list(cluster=cluster, page_size=1000)
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (e.display_name, e.cluster, e.state.value, len(e.deployed_models), e.predict_url)
        for e in page.items
    ]
    print_table("endpoints", ["name", "cluster", "state", "models", "predict url"], rows)


@app.command("get")
def get(name: str, output: Annotated[str, typer.Option("--output", "-o")] = "table") -> None:
    """Show an endpoint and its traffic split."""
    with RaydeckClient() as client:
        endpoint = client.endpoints.get(name)
    print_json(endpoint) if output == "json" else _show(endpoint)


@app.command("deploy")
def deploy(
    name: str,
    model: Annotated[str, typer.Argument(help="model, model@version or model@alias")],
    traffic: Annotated[int | None, typer.Option(help="Percent of traffic for it.")] = None,
    min_replicas: Annotated[int, typer.Option()] = 1,
    max_replicas: Annotated[int | None, typer.Option()] = None,
    cpus: Annotated[float, typer.Option(help="CPUs per replica.")] = 1,
    batch_size: Annotated[int | None, typer.Option(help="Turn on dynamic batching.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 600,
) -> None:
    """Deploy a model version on an endpoint."""
    batching = {"max_batch_size": batch_size} if batch_size else None
    with RaydeckClient() as client:
        endpoint = client.endpoints.deploy(
            name,
            model,
            traffic_percentage=traffic,
            min_replica_count=min_replicas,
            max_replica_count=max_replicas,
            num_cpus=cpus,
            batching=batching,
        )
        if wait:
            endpoint = _wait_ready(client, name, timeout)
    _show(endpoint)


@app.command("undeploy")
def undeploy(
    name: str,
    deployed_model_id: str,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 600,
) -> None:
    """Remove a deployed model; its traffic goes to the others."""
    with RaydeckClient() as client:
        endpoint = client.endpoints.undeploy(name, deployed_model_id)
        if wait:
            endpoint = _wait_ready(client, name, timeout)
    _show(endpoint)


@app.command("traffic")
def traffic(
    name: str,
    split: Annotated[list[str], typer.Argument(help="DEPLOYED_MODEL_ID=PERCENT ...")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 600,
) -> None:
    """Set the traffic split (must sum to 100)."""
    parsed: dict[str, int] = {}
    for item in split:
        key, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise InvalidArgumentError(f"{item!r} must look like ID=PERCENT", field="split")
        parsed[key] = int(value)
    with RaydeckClient() as client:
        endpoint = client.endpoints.set_traffic(name, parsed)
        if wait:
            endpoint = _wait_ready(client, name, timeout)
    _show(endpoint)


@app.command("predict")
def predict(
    name: str,
    instances: Annotated[
        str | None, typer.Option("--instances", "-i", help='JSON list, e.g. "[[1,2,3]]"')
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="JSON body file.")] = None,
    explain: Annotated[bool, typer.Option(help="Feature attributions instead.")] = False,
) -> None:
    """Predict: --instances '[[...]]' or --file body.json ({"instances": [...]})."""
    try:
        body = json.loads(file.read_text()) if file else {"instances": json.loads(instances or "")}
    except ValueError as exc:
        raise InvalidArgumentError(
            f"instances are not valid JSON: {exc}", field="instances"
        ) from exc
    with RaydeckClient() as client:
        bound = client.endpoint(name)
        call = bound.explain if explain else bound.predict
        result = call(body.get("instances", []), body.get("parameters"))
    sys.stdout.write(result.model_dump_json(indent=2, exclude_none=True) + "\n")


@app.command("delete")
def delete(
    name: str,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: float = 300,
) -> None:
    """Delete an endpoint and its Serve application."""
    with RaydeckClient() as client:
        client.endpoints.delete(name)
        if wait:

            def state() -> str:
                try:
                    return client.endpoints.get(name).state.value
                except NotFoundError:
                    return "DELETED"

            wait_with_progress(
                f"deleting {name}", state, lambda s: s == "DELETED", str, timeout=timeout
            )
    console.print(f"endpoint {name} deleted")
