"""Every route needs a token (except /healthz); tokens, expiry, revocation, hashing.

What each role may do on each route is checked in test_role_matrix.py."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Api


def _routes(api: Api) -> list[tuple[str, str]]:
    """Every (method, path) in the published OpenAPI document, path params filled in."""
    spec = api.http.get("/openapi.json").json()
    found = []
    for template, operations in spec["paths"].items():
        if template == "/healthz":
            continue
        path = re.sub(r"\{[^}]+\}", "x", template)
        found.extend((method.upper(), path) for method in operations if method != "head")
    return found


def test_route_inventory_is_not_empty(static_api: Api) -> None:
    assert len(_routes(static_api)) >= 15


def test_healthz_needs_no_token(static_api: Api) -> None:
    response = static_api.http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_every_route_rejects_missing_and_bad_tokens(static_api: Api) -> None:
    for method, path in _routes(static_api):
        missing = static_api.http.request(method, path)
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.json()["error"]["code"] == "unauthenticated"
        bad = static_api.http.request(method, path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401, (method, path)


def test_token_lifecycle_and_revocation(static_api: Api) -> None:
    admin = static_api.sdk("admin")
    created = admin.tokens.create("ci-bot", role="viewer")
    assert created.secret.startswith("rdk_")
    listed = {t.name: t for t in admin.tokens.list().items}
    assert listed["ci-bot"].prefix == created.secret[:12]
    assert "secret" not in listed["ci-bot"].model_dump()
    headers = {"Authorization": f"Bearer {created.secret}"}
    assert static_api.http.get("/api/v1/clusters", headers=headers).status_code == 200
    admin.tokens.revoke("ci-bot")
    assert static_api.http.get("/api/v1/clusters", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(static_api: Api) -> None:
    from raydeck.db.models import TokenRow

    with static_api.app.state.raydeck.db.session() as session:
        stored = [row.secret_hash for row in session.query(TokenRow)]
    for secret in static_api.tokens.values():
        assert secret not in stored
        assert all(secret not in h for h in stored)


@pytest.mark.parametrize("days", [0, -1, 99999])
def test_bad_token_expiry_is_rejected(static_api: Api, days: int) -> None:
    response = static_api.http.post(
        "/api/v1/tokens", json={"name": "x", "expires_in_days": days}, headers=static_api.headers()
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "expires_in_days"
