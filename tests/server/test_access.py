"""Accounts, tokens bound to them (expiry, revocation), projects as the tenancy boundary,
and the audit log of every mutation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from raydeck.db.models import TokenRow
from raydeck.db.session import _MIGRATIONS, make_engine
from raydeck.server.audit import AuditMiddleware
from tests.conftest import Api


def _token(api: Api, body: dict[str, object]) -> str:
    response = api.http.post("/api/v1/tokens", json=body, headers=api.headers())
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def test_tokens_act_as_accounts_expire_and_die_with_them(static_api: Api) -> None:
    api, admin = static_api, static_api.headers()
    assert (
        api.http.post("/api/v1/accounts", json={"name": "erin"}, headers=admin).status_code == 201
    )
    binding = {"account": "erin", "role": "user", "project": "default"}
    assert api.http.post("/api/v1/roleBindings", json=binding, headers=admin).status_code == 201
    both = api.http.post(
        "/api/v1/tokens", json={"name": "t1", "account": "erin", "role": "admin"}, headers=admin
    )
    assert both.status_code == 400 and both.json()["error"]["field"] == "role"
    ghost = api.http.post("/api/v1/tokens", json={"name": "t1", "account": "ghost"}, headers=admin)
    assert ghost.status_code == 404 and ghost.json()["error"]["field"] == "account"
    erin = {"Authorization": f"Bearer {_token(api, {'name': 'erin-t', 'account': 'erin'})}"}
    me = api.http.get("/api/v1/tokens/self", headers=erin).json()
    assert (me["account"], me["roles"]) == ("erin", ["user"])
    assert api.http.get("/api/v1/clusters", headers=erin).status_code == 200

    # Expiry: a token past its expiry is refused even though it is not revoked.
    with api.app.state.raydeck.db.session() as session:
        row = session.query(TokenRow).filter_by(name="erin-t").one()
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    expired = api.http.get("/api/v1/clusters", headers=erin)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]

    # Deleting the account ends every token it had.
    erin2 = {"Authorization": f"Bearer {_token(api, {'name': 'erin-2', 'account': 'erin'})}"}
    assert api.http.get("/api/v1/clusters", headers=erin2).status_code == 200
    assert api.http.delete("/api/v1/accounts/erin", headers=admin).status_code == 200
    assert api.http.get("/api/v1/clusters", headers=erin2).status_code == 401


def test_projects_separate_clusters(api: Api) -> None:
    admin = api.headers()
    assert (
        api.http.post("/api/v1/projects", json={"name": "blue"}, headers=admin).status_code == 201
    )
    token = _token(api, {"name": "blue-bot", "role": "user", "project": "blue"})
    blue = {"Authorization": f"Bearer {token}", "X-Raydeck-Project": "blue"}
    made = api.http.post("/api/v1/clusters", json={"name": "same"}, headers=blue)
    assert made.status_code == 201 and made.json()["project"] == "blue"
    # The same name is free in another project; lists and gets stay inside their project.
    assert (
        api.http.post("/api/v1/clusters", json={"name": "same"}, headers=admin).status_code == 201
    )
    listed = api.http.get("/api/v1/clusters", headers=blue).json()["items"]
    assert [(c["name"], c["project"]) for c in listed] == [("same", "blue")]
    assert api.http.get("/api/v1/clusters/same", headers=admin).json()["project"] == "default"
    # The blue bot has no role in the default project.
    no_header = {"Authorization": f"Bearer {token}"}
    assert api.http.get("/api/v1/clusters", headers=no_header).status_code == 403
    unknown = api.http.get("/api/v1/clusters", headers={**admin, "X-Raydeck-Project": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "project"
    bad = api.http.get("/api/v1/clusters", headers={**admin, "X-Raydeck-Project": "No_Way"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "project"
    # A project with clusters cannot be deleted; default never.
    assert api.http.delete("/api/v1/projects/blue", headers=admin).status_code == 412
    assert api.http.delete("/api/v1/projects/default", headers=admin).status_code == 412


def test_audit_log_records_every_mutation_and_outcome(static_api: Api) -> None:
    api, admin = static_api, static_api.headers()
    before = datetime.now(UTC) - timedelta(seconds=1)
    api.http.post("/api/v1/projects", json={"name": "audited"}, headers=admin)
    api.http.post("/api/v1/projects", json={"name": "audited"}, headers=admin)  # 409
    api.http.post("/api/v1/projects", json={"name": "x"}, headers=api.headers("viewer"))  # 403
    api.http.post("/api/v1/projects", json={"name": "x"})  # 401
    api.http.post("/api/v1/projects", json={"name": "Bad Name"}, headers=admin)  # 400
    api.http.get("/api/v1/projects", headers=admin)  # reads are not audited
    entries = api.http.get(
        "/api/v1/audit", params={"since": before.isoformat()}, headers=admin
    ).json()["items"]
    rows = [(e["actor"], e["action"], e["status_code"], e["outcome"]) for e in entries]
    assert rows == [
        ("admin-t", "projects.create", 201, "ok"),
        ("admin-t", "projects.create", 409, "already_exists"),
        ("viewer-t", "projects.create", 403, "permission_denied"),
        ("anonymous", "projects.create", 401, "unauthenticated"),
        ("admin-t", "projects.create", 400, "invalid_argument"),
    ]
    assert all(e["method"] == "POST" and e["path"] == "/api/v1/projects" for e in entries)
    assert all(datetime.fromisoformat(e["time"]) >= before for e in entries)
    # Only admins read the audit log.
    assert api.http.get("/api/v1/audit", headers=api.headers("user")).status_code == 403


def test_migration_turns_existing_tokens_into_service_accounts(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'raydeck.db'}")
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))

    def run(action: str, revision: str) -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)

    run("upgrade", "0006")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tokens (id, name, role, prefix, secret_hash, created_at) VALUES "
                "('tok-1', 'ci', 'viewer', 'rdk_x', 'h1', '2026-01-01 00:00:00'),"
                "('tok-2', 'ci', 'viewer', 'rdk_y', 'h2', '2026-01-02 00:00:00')"
            )
        )
    run("upgrade", "head")
    with engine.connect() as connection:
        accounts = connection.execute(text("SELECT name, kind FROM accounts")).all()
        bindings = connection.execute(text("SELECT project, role FROM role_bindings")).all()
        linked = connection.execute(
            text("SELECT count(*) FROM tokens WHERE account_id IS NOT NULL")
        ).scalar()
        projects = connection.execute(text("SELECT name FROM projects")).scalars().all()
    assert accounts == [("ci", "service_account")]
    assert bindings == [("*", "viewer")]
    assert linked == 2 and projects == ["default"]
    run("downgrade", "0006")
    run("upgrade", "head")
    engine.dispose()


def _audit_layer(api: Api) -> AuditMiddleware:
    layer = api.app.middleware_stack
    while not isinstance(layer, AuditMiddleware):
        layer = layer.app  # type: ignore[union-attr]
    return layer


def test_unauthenticated_writes_are_aggregated_per_source_and_action(static_api: Api) -> None:
    """A flood of anonymous writes leaves one audit row per source/action per window, whose
    detail counts the attempts; authenticated callers still get a row per request."""
    api, admin = static_api, static_api.headers()
    api.http.get("/healthz")  # builds the middleware stack
    now = [1000.0]
    _audit_layer(api).anonymous.clock = lambda: now[0]
    for _ in range(50):
        assert api.http.post("/api/v1/clusters", json={"name": "c"}).status_code == 401
        assert api.http.delete("/api/v1/clusters/c", headers={"Authorization": "Bearer nope"})
    now[0] += 3  # the count is written at most every 2 s
    api.http.post("/api/v1/clusters", json={"name": "c"})
    now[0] += 60  # a new window: a new row, and the old one gets its final count
    api.http.post("/api/v1/clusters", json={"name": "c"})
    api.http.post("/api/v1/projects", json={"name": "x"}, headers=api.headers("viewer"))
    api.http.post("/api/v1/projects", json={"name": "x"}, headers=api.headers("viewer"))
    entries = api.http.get("/api/v1/audit", headers=admin).json()["items"]
    rows = [(e["actor"], e["action"], e["status_code"], e["detail"]) for e in entries]
    assert rows == [
        ("anonymous", "clusters.create", 401, "source testclient: 51 attempts"),
        ("anonymous", "clusters.delete", 401, "source testclient: 50 attempts"),
        ("anonymous", "clusters.create", 401, "source testclient: 1 attempt"),
        ("viewer-t", "projects.create", 403, None),
        ("viewer-t", "projects.create", 403, None),
    ]
