"""Table-driven ``create`` / ``list`` / ``delete`` commands for a resource group (see
cli/access.py): every command opens a client, makes one call and prints one line or a table.

A command's arguments and options are declared once, on the function the spec names (its
first parameter, the API client, is left out of the command line), so typer shows and parses
them exactly as it would on a hand-written command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import typer

from raydeck.cli.output import console, print_table
from raydeck.client import RaydeckClient
from raydeck.core.models.common import Page

__all__ = ["ResourceCommands", "add_resource_commands"]


@dataclass(frozen=True)
class ResourceCommands:
    """``create(client, <arguments>)`` returns the line to print; ``list(client, <options>)``
    the page whose items ``row`` turns into table rows; ``delete(client, <key>)`` removes one,
    then ``deleted`` (formatted with the key) is printed."""

    create: Callable[..., str]
    list: Callable[..., Page[Any]]
    title: str
    columns: Sequence[str]
    row: Callable[[Any], tuple[str, ...]]
    delete: Callable[[RaydeckClient, str], object]
    deleted: str
    key: str = "name"


def add_resource_commands(group: typer.Typer, spec: ResourceCommands) -> None:
    def create(**arguments: Any) -> None:
        with RaydeckClient() as client:
            line = spec.create(client, **arguments)
        console.print(line)

    def list_items(**options: Any) -> None:
        with RaydeckClient() as client:
            page = spec.list(client, **options)
        print_table(spec.title, list(spec.columns), [spec.row(item) for item in page.items])

    def delete(**arguments: str) -> None:
        key = arguments[spec.key]
        with RaydeckClient() as client:
            spec.delete(client, key)
        console.print(spec.deleted.format(key))

    key = inspect.Parameter(spec.key, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
    group.command("create")(_declared(create, _cli_parameters(spec.create)))
    group.command("list")(_declared(list_items, _cli_parameters(spec.list)))
    group.command("delete")(_declared(delete, [key]))


def _cli_parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    """``function``'s parameters after the client, annotations resolved (typer needs types)."""
    return list(inspect.signature(function, eval_str=True).parameters.values())[1:]


def _declared(command: Callable[..., None], parameters: list[inspect.Parameter]) -> Any:
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return command
