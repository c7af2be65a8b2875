"""raydeck models upload|list|get|versions|alias|delete"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raydeck.cli.output import console, err_console, print_json, print_table
from raydeck.client import RaydeckClient
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models import Framework, Model, ModelVersion
from raydeck.core.models.registry import parse_version_ref

app = typer.Typer(help="Register, inspect, alias and delete models.", no_args_is_help=True)

Output = Annotated[str, typer.Option("--output", "-o", help="table|json")]


def _show_version(version: ModelVersion) -> None:
    aliases = ", ".join(version.aliases) or "-"
    console.print(f"[bold]{version.ref}[/bold] {version.framework.value}  aliases: {aliases}")
    console.print(f"  id:        {version.id}", highlight=False)
    console.print(f"  artifact:  {version.artifact_uri}", highlight=False)
    console.print(f"  source:    {version.source_uri or '-'}", highlight=False)
    console.print(f"  sha256:    {version.sha256} ({version.size_bytes} bytes)", highlight=False)
    if version.labels:
        labels = ", ".join(f"{k}={v}" for k, v in version.labels.items())
        console.print(f"  labels:    {labels}", highlight=False)
    if version.description:
        console.print(f"  about:     {version.description}", highlight=False)


def _show_model(model: Model) -> None:
    console.print(
        f"[bold]{model.display_name}[/bold] ({model.id}) {model.version_count} version(s), "
        f"default @{model.default_version_id}, latest @{model.latest_version_id}"
    )
    if model.labels:
        console.print("  labels: " + ", ".join(f"{k}={v}" for k, v in model.labels.items()))


def _version_rows(versions: list[ModelVersion]) -> list[tuple[object, ...]]:
    return [
        (
            v.version_id,
            v.framework.value,
            ", ".join(v.aliases),
            v.size_bytes,
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for v in versions
    ]


@app.command("upload")
def upload(
    name: Annotated[str, typer.Argument(help="Model name (with --parent: that model's name).")],
    framework: Annotated[Framework, typer.Option("--framework", "-f", help="Model framework.")],
    artifact: Annotated[
        str, typer.Option("--artifact", "-a", help="Local dir or .tar.gz (uploaded), or URI.")
    ],
    parent: Annotated[
        str | None, typer.Option("--parent", help="Add a version to this model.")
    ] = None,
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Version alias.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value")] = None,
    description: Annotated[str | None, typer.Option(help="What this version is.")] = None,
    default: Annotated[
        bool, typer.Option("--default/--no-default", help="Move 'default' to this version.")
    ] = True,
    output: Output = "table",
) -> None:
    """Register a model, or a new version of one (--parent).

    The artifact directory holds, by --framework:

    \b
      sklearn     model.joblib or model.pkl
      xgboost     model.json, model.ubj or model.bst (Booster or sklearn API),
                  or model.joblib / model.pkl
      lightgbm    model.txt (Booster), or model.joblib / model.pkl (LGBMModel)
      pytorch     model.pt (TorchScript) or model.pth (a whole pickled nn.Module)
      tensorflow  saved_model.pb + variables/ (a SavedModel)
      custom      raydeck_predictor.json {"class": "predictor:MyPredictor"}
                  + predictor.py (a class with load(artifact_dir) and predict(instances))
    """
    labels = dict(item.partition("=")[::2] for item in label or [])
    if "://" not in artifact and not Path(artifact).exists():
        # A plain path is uploaded from this machine; a path only the server reads is a URI.
        raise InvalidArgumentError(
            f"artifact {artifact} does not exist here (a local directory or .tar.gz is "
            "uploaded; name a path on the server as file://…)",
            field="artifact",
        )
    action = "uploading" if Path(artifact).exists() else "registering"
    with RaydeckClient() as client, err_console.status(f"{action} {artifact}"):
        version = client.models.upload(
            name,
            artifact,
            framework,
            parent_model=parent,
            aliases=alias or [],
            labels=labels,
            description=description,
            is_default_version=default,
        )
    print_json(version) if output == "json" else _show_version(version)


@app.command("list")
def list_models(
    label: Annotated[str | None, typer.Option(help="key=value")] = None,
    framework: Annotated[Framework | None, typer.Option(help="Has a version of this.")] = None,
    output: Output = "table",
) -> None:
    """List models."""
    with RaydeckClient() as client:
        page = client.models.list(label=label, framework=framework, page_size=1000)
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (
            m.display_name,
            m.version_count,
            m.default_version_id,
            ", ".join(f.value for f in m.frameworks),
            m.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for m in page.items
    ]
    print_table("models", ["name", "versions", "default", "frameworks", "updated"], rows)


@app.command("get")
def get(
    ref: Annotated[str, typer.Argument(help="MODEL, MODEL@VERSION or MODEL@ALIAS")],
    output: Output = "table",
) -> None:
    """Show a model (and its default version) or one version."""
    model_name, version = parse_version_ref(ref)
    with RaydeckClient() as client:
        if version is not None:
            found = client.models.get_version(ref)
            print_json(found) if output == "json" else _show_version(found)
            return
        model = client.models.get(model_name)
        default = client.models.get_version(model_name)
    if output == "json":
        print_json(model)
        return
    _show_model(model)
    _show_version(default)


@app.command("versions")
def versions(model: str, output: Output = "table") -> None:
    """List a model's versions."""
    with RaydeckClient() as client:
        page = client.models.versions(model, page_size=1000)
    if output == "json":
        print_json(page.items)
        return
    print_table(
        f"{model} versions",
        ["version", "framework", "aliases", "bytes", "created"],
        _version_rows(page.items),
    )


@app.command("alias")
def alias(
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION (or MODEL@ALIAS) to point at")],
    name: Annotated[str, typer.Argument(help="Alias to move here, e.g. prod or default")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove it from this version.")] = False,
) -> None:
    """Move an alias to a version (an alias is on one version at a time)."""
    with RaydeckClient() as client:
        if remove:
            version = client.models.remove_alias(ref, name)
        else:
            version = client.models.add_alias(ref, name)
    _show_version(version)


@app.command("delete")
def delete(
    ref: Annotated[str, typer.Argument(help="MODEL (every version) or MODEL@VERSION")],
) -> None:
    """Delete a model or one version, with their artifacts (refused while deployed)."""
    model_name, version = parse_version_ref(ref)
    with RaydeckClient() as client:
        if version is None:
            client.models.delete(model_name)
            console.print(f"model {model_name} deleted", highlight=False)
        else:
            deleted = client.models.delete_version(ref)
            console.print(f"model version {deleted.ref} deleted", highlight=False)
