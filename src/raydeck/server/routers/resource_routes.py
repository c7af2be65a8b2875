"""Table-driven create / list / get / delete routes for resources whose routers only pass a
request through to one service call each (see routers/access.py).

``add_resource_routes`` registers, in this order, ``POST <path>`` (201), ``GET <path>``,
``GET <path>/{<key>}`` (when the spec has ``get``) and ``DELETE <path>/{<key>}``, each behind
``require("<permission>.<verb>")``, with the same operation names, parameters and response
models a hand-written router would have, so the OpenAPI document does not depend on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy.orm import Session

from raydeck.core.models.common import Page
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession

__all__ = ["ResourceRoutes", "add_resource_routes", "query_parameter"]


@dataclass(frozen=True)
class ResourceRoutes:
    """One resource: where it lives, who may touch it, and the service call per verb.

    ``create`` gets the parsed ``body``, ``list`` the ``list_query`` parameters by name,
    ``get``/``delete`` the ``{key}`` path parameter.
    """

    path: str
    key: str
    singular: str
    plural: str
    permission: str
    item: type[BaseModel]
    body: type[BaseModel]
    create: Callable[[Session, Any], BaseModel]
    list: Callable[..., Page[Any]]
    delete: Callable[[Session, str], BaseModel]
    get: Callable[[Session, str], BaseModel] | None = None
    list_query: Sequence[inspect.Parameter] = field(default_factory=tuple)


def query_parameter(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    """A query parameter of a list route, declared as it would be in a signature."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def add_resource_routes(router: APIRouter, spec: ResourceRoutes) -> None:
    item_path = f"{spec.path}/{{{spec.key}}}"
    key = _parameter(spec.key, str)

    def add(
        method: str,
        path: str,
        verb: str,
        params: list[inspect.Parameter],
        returns: Any,
        call: Callable[..., Any],
    ) -> None:
        noun = spec.plural if verb == "list" else spec.singular
        router.add_api_route(
            path,
            _endpoint(call, params, f"{spec.permission}.{verb}", returns),
            methods=[method],
            name=f"{verb}_{noun}",
            status_code=201 if verb == "create" else None,
            response_model=returns,
        )

    def by_key(call: Callable[[Session, str], BaseModel]) -> Callable[..., BaseModel]:
        def handle(session: Session, **path: str) -> BaseModel:
            return call(session, path[spec.key])

        return handle

    def create(session: Session, body: BaseModel) -> BaseModel:
        return spec.create(session, body)

    add("POST", spec.path, "create", [_parameter("body", spec.body)], spec.item, create)
    add("GET", spec.path, "list", list(spec.list_query), _page_of(spec.item), spec.list)
    if spec.get is not None:
        add("GET", item_path, "get", [key], spec.item, by_key(spec.get))
    add("DELETE", item_path, "delete", [key], spec.item, by_key(spec.delete))


def _page_of(item: type[BaseModel]) -> Any:
    return Page[item]  # type: ignore[valid-type]


def _parameter(name: str, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)


def _endpoint(
    call: Callable[..., Any], params: list[inspect.Parameter], permission: str, returns: Any
) -> Callable[..., Any]:
    """A function FastAPI reads like a hand-written endpoint: ``params`` first, then the DB
    session and the permission check, then keyword-only query parameters."""
    caller = Annotated[Principal, Depends(require(permission))]
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    signature = inspect.Signature(
        [*positional, _parameter("session", DbSession), _parameter("_", caller), *keyword],
        return_annotation=returns,
    )

    def endpoint(session: Session, _: Principal, **arguments: Any) -> Any:
        return call(session, **arguments)

    endpoint.__signature__ = signature  # type: ignore[attr-defined]
    return endpoint
