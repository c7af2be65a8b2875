"""Role matrix: every OpenAPI route × admin / user / viewer / no token / another project.

The expectations come from ROUTE_CLASSES and EXPECTED below (the one table); every route in
/openapi.json is classified by it, so routes added later are covered automatically
(GET → read, other methods → write, unless a row says otherwise).
"""

from __future__ import annotations

import re

import pytest

from raydeck.core.models import TokenCreate
from raydeck.core.models.access import AccountCreate, ProjectCreate, RoleBindingCreate
from raydeck.server.services import access, tokens
from tests.conftest import Api

# (path pattern, methods or None for all, class). First match wins.
ROUTE_CLASSES: list[tuple[str, set[str] | None, str]] = [
    (r"^/api/v1/tokens/self$", None, "self"),
    (r"^/api/v1/(tokens|accounts|roleBindings|roles|audit)(/|$)", None, "admin"),
    (r"^/api/v1/projects$", {"GET"}, "global-read"),
    (r"^/api/v1/projects(/[^/]+)?$", None, "admin"),
    (r"/budget$", {"PUT", "DELETE", "PATCH", "POST"}, "project-admin"),
    (r"(/credentials|/authorize|:predict|:rawPredict|:explain)$", None, "use"),
    # Joining takes a join token and syncing an agent credential: API tokens never work.
    (r"^/api/v1/(hosts/join|agent/sync|agent/logs)$", None, "agent"),
    (r"^/api/v1/hosts(/|$)", {"GET"}, "global-read"),
    (r"^/api/v1/hosts(/|$)", None, "admin"),
]

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
