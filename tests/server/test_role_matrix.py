"""Role matrix: every OpenAPI route × admin / user / viewer / no token / another project,
plus an expired token and, per route, a custom role holding every permission but the one
that route declares.

The expectations come from ROUTE_CLASSES and EXPECTED below (the one table); every route in
/openapi.json is classified by it, so routes added later are covered automatically
(GET → read, other methods → write, unless a row says otherwise). The permission each route
needs is read from the route itself (its ``require(...)`` dependency), and a route that
declares none fails ``test_every_route_declares_its_permission``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute

from raydeck.core.models import TokenCreate
from raydeck.core.models.access import (
    ALL_PROJECTS,
    AccountCreate,
    CustomRoleCreate,
    ProjectCreate,
    RoleBindingCreate,
)
from raydeck.db.models import TokenRow, utcnow
from raydeck.server.services import access, tokens
from raydeck.server.services.roles import SELF_RESOURCES
from tests.conftest import Api

# (path pattern, methods or None for all, class). First match wins.
ROUTE_CLASSES: list[tuple[str, set[str] | None, str]] = [
    (r"^/api/v1/tokens/self$", None, "self"),
    (r"^/api/v1/(tokens|accounts|roleBindings|roles|audit)(/|$)", None, "admin"),
    (r"^/api/v1/projects$", {"GET"}, "global-read"),
    (r"^/api/v1/projects(/[^/]+)?$", None, "admin"),
    (r"/budget$", {"PUT", "DELETE", "PATCH", "POST"}, "project-admin"),
    (r"(/credentials|/authorize|:predict|:rawPredict|:explain)$", None, "use"),
    # Ray's package existence check is part of a submission (jobs.submit), not a read.
    (r"/ray/api/packages/", None, "write"),
    # Joining takes a join token and syncing an agent credential: API tokens never work.
    (r"^/api/v1/(hosts/join|agent/sync|agent/logs)$", None, "agent"),
    (r"^/api/v1/hosts(/|$)", {"GET"}, "global-read"),
    (r"^/api/v1/hosts(/|$)", None, "admin"),
]
# Routes that need no token at all (everything else declares a permission).
PUBLIC = {("GET", "/healthz")}
# Routes that take a secret of their own instead of an API token (a host's join token, a host
# agent's credential): every API token gets 401 there (the "agent" class below), and their
# own secrets are tested in tests/server/test_hosts_api.py.
OWN_CREDENTIAL = {
    ("POST", "/api/v1/hosts/join"),
    ("POST", "/api/v1/agent/sync"),
    ("POST", "/api/v1/agent/logs"),
}

OK, DENIED, UNAUTHENTICATED = "ok", 403, 401
CALLERS = ("admin", "user", "viewer", "anonymous", "other", "other-in-own-project")
EXPECTED: dict[str, dict[str, object]] = {
    "read": dict(zip(CALLERS, (OK, OK, OK, 401, 403, OK), strict=True)),
    "write": dict(zip(CALLERS, (OK, OK, 403, 401, 403, OK), strict=True)),
    "use": dict(zip(CALLERS, (OK, OK, 403, 401, 403, OK), strict=True)),
    "self": dict(zip(CALLERS, (OK, OK, OK, 401, OK, OK), strict=True)),
    "admin": dict(zip(CALLERS, (OK, 403, 403, 401, 403, 403), strict=True)),
    "global-read": dict(zip(CALLERS, (OK, OK, OK, 401, 403, 403), strict=True)),
    "project-admin": dict(zip(CALLERS, (OK, 403, 403, 401, 403, OK), strict=True)),
    "agent": dict.fromkeys(CALLERS, UNAUTHENTICATED),
}


def classify(method: str, template: str) -> str:
    for pattern, methods, cls in ROUTE_CLASSES:
        if re.search(pattern, template) and (methods is None or method in methods):
            return cls
    return "read" if method == "GET" else "write"


def _routes(api: Api) -> list[tuple[str, str]]:
    spec = api.http.get("/openapi.json").json()
    return [
        (method.upper(), template)
        for template, operations in spec["paths"].items()
        if template != "/healthz"
        for method in operations
    ]


@pytest.fixture
def matrix_api(static_api: Api) -> Api:
    """Adds an account that is admin of project 'other' only."""
    with static_api.app.state.raydeck.db.session() as session:
        access.create_project(session, ProjectCreate(name="other"))
        access.create_account(session, AccountCreate(name="olga"))
        access.bind_role(session, RoleBindingCreate(account="olga", role="admin", project="other"))
        created = tokens.create_token(session, TokenCreate(name="olga-t", account="olga"))
    static_api.tokens["other"] = created.secret
    return static_api


def _request(api: Api, caller: str, method: str, template: str) -> int:
    project = "other" if caller == "other-in-own-project" else "default"
    path = re.sub(r"\{project\}", project, template)
    path = re.sub(r"\{[^}]+\}", "x", path)
    headers: dict[str, str] = {}
    if caller != "anonymous":
        role = "other" if caller.startswith("other") else caller
        headers = {**api.headers(role), "X-Raydeck-Project": project}
    return api.http.request(method, path, headers=headers).status_code


def test_every_route_matches_the_role_matrix(matrix_api: Api) -> None:
    routes = _routes(matrix_api)
    assert len(routes) >= 40
    mismatches = []
    for method, template in routes:
        cls = classify(method, template)
        for caller in CALLERS:
            status = _request(matrix_api, caller, method, template)
            expected = EXPECTED[cls][caller]
            good = (
                (status not in (401, 403) and status < 500)
                if expected == OK
                else (status == expected)
            )
            if not good:
                mismatches.append((method, template, cls, caller, expected, status))
    assert not mismatches, "\n".join(map(str, mismatches))


def test_allowed_reads_answer_2xx(matrix_api: Api) -> None:
    """Collection reads need no path parameters, so an allowed caller gets a real 2xx, also
    in a project of its own: every resource is kept per project (none answers 412)."""
    checked = 0
    for method, template in _routes(matrix_api):
        if method != "GET" or "{" in template or classify(method, template) != "read":
            continue
        for caller in ("admin", "user", "viewer", "other-in-own-project"):
            status = _request(matrix_api, caller, method, template)
            assert 200 <= status < 300, (template, caller, status)
            checked += 1
    assert checked >= 20


def test_custom_role_grants_exactly_its_permissions(matrix_api: Api) -> None:
    admin = matrix_api.headers("admin")
    http = matrix_api.http
    role = {"name": "deployer", "permissions": ["endpoints.*", "models.get", "models.list"]}
    assert http.post("/api/v1/roles", json=role, headers=admin).status_code == 201
    assert http.post("/api/v1/accounts", json={"name": "dana"}, headers=admin).status_code == 201
    binding = {"account": "dana", "role": "deployer", "project": "default"}
    assert http.post("/api/v1/roleBindings", json=binding, headers=admin).status_code == 201
    token = http.post("/api/v1/tokens", json={"name": "dana-t", "account": "dana"}, headers=admin)
    assert token.status_code == 201, token.text
    dana = {"Authorization": f"Bearer {token.json()['secret']}"}
    assert http.get("/api/v1/endpoints", headers=dana).status_code == 200
    assert http.get("/api/v1/models", headers=dana).status_code == 200
    assert http.get("/api/v1/clusters", headers=dana).status_code == 403
    assert http.post("/api/v1/clusters", json={"name": "c"}, headers=dana).status_code == 403
    assert http.get("/api/v1/billing/report", headers=dana).status_code == 403
    # A custom role bound in one project grants nothing in another.
    other = {**dana, "X-Raydeck-Project": "other"}
    assert http.get("/api/v1/endpoints", headers=other).status_code == 403
    # The role is in use: it cannot be deleted until unbound.
    assert http.delete("/api/v1/roles/deployer", headers=admin).status_code == 412
    me = http.get("/api/v1/tokens/self", headers=dana).json()
    assert (me["account"], me["roles"], me["project"]) == ("dana", ["deployer"], "default")


def _declared(dependant: Any) -> Iterator[str]:
    for dependency in dependant.dependencies:
        permission = getattr(dependency.call, "permission", None)
        if isinstance(permission, str):
            yield permission
        yield from _declared(dependency)


def _flat(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """The app's routes, also those of included routers (kept apart by this FastAPI; every
    router here is included without an extra prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            assert not route.include_context.prefix  # type: ignore[attr-defined]
            yield from _flat(included.routes)
        else:
            yield route


def _permissions(routes: list[BaseRoute]) -> dict[tuple[str, str], set[str]]:
    """(method, path template) → the permissions its dependencies require."""
    found: dict[tuple[str, str], set[str]] = {}
    for route in _flat(routes):
        if isinstance(route, APIRoute):
            template = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)  # as OpenAPI names it
            for method in route.methods:
                found[(method, template)] = set(_declared(route.dependant))
    return found


def test_every_route_declares_its_permission(matrix_api: Api) -> None:
    """A route added without ``require(...)`` fails here (websockets authorize on accept:
    they are checked by their own tests)."""
    declared = _permissions(matrix_api.app.routes)
    routes = _routes(matrix_api)
    assert len(routes) >= 100
    missing = [r for r in routes if r not in PUBLIC | OWN_CREDENTIAL and not declared.get(r)]
    assert not missing, f"routes without a permission check: {missing}"
    sockets = [r.path for r in _flat(matrix_api.app.routes) if isinstance(r, APIWebSocketRoute)]
    assert sockets == ["/api/v1/clusters/{cluster}/ray/api/jobs/{submission_id}/logs/tail"]


def test_an_expired_token_is_refused_everywhere(matrix_api: Api) -> None:
    with matrix_api.app.state.raydeck.db.session() as session:
        expired = tokens.create_token(session, TokenCreate(name="old", role="admin")).secret
        row = session.query(TokenRow).filter(TokenRow.name == "old").one()
        row.expires_at = utcnow() - timedelta(seconds=1)
    headers = {"Authorization": f"Bearer {expired}"}
    for method, template in _routes(matrix_api):
        path = re.sub(r"\{[^}]+\}", "x", template)
        answer = matrix_api.http.request(method, path, headers=headers)
        assert answer.status_code == 401, (method, template, answer.status_code)
        if (method, template) not in OWN_CREDENTIAL:  # there: no API token is valid at all
            assert answer.json()["error"]["message"] == "token expired"


def test_a_custom_role_lacking_the_routes_permission_is_refused(matrix_api: Api) -> None:
    """Per route: an account whose custom role (bound on every project) holds every
    permission any route declares except the one this route needs gets a 403."""
    declared = _permissions(matrix_api.app.routes)
    everything = set().union(*declared.values())
    secrets: dict[str, str] = {}
    with matrix_api.app.state.raydeck.db.session() as session:
        for index, needed in enumerate(sorted(everything)):
            if needed.partition(".")[0] in SELF_RESOURCES:
                continue  # about the caller itself: any valid token may ask
            name = f"lacks-{index}"
            allowed = sorted(everything - {needed})
            access.create_role(session, CustomRoleCreate(name=name, permissions=allowed))
            access.create_account(session, AccountCreate(name=name))
            binding = RoleBindingCreate(account=name, role=name, project=ALL_PROJECTS)
            access.bind_role(session, binding)
            token = TokenCreate(name=f"{name}-t", account=name)
            secrets[needed] = tokens.create_token(session, token).secret
    checked, wrong = 0, []
    for method, template in _routes(matrix_api):
        for needed in sorted(declared.get((method, template), set())):
            if needed not in secrets:
                continue
            path = re.sub(r"\{[^}]+\}", "x", template)
            headers = {"Authorization": f"Bearer {secrets[needed]}"}
            answer = matrix_api.http.request(method, path, headers=headers)
            checked += 1
            if answer.status_code != 403:
                wrong.append((method, template, needed, answer.status_code))
    assert checked >= 100
    assert not wrong, "\n".join(map(str, wrong))
