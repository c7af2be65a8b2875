"""Issue 11, finding 6: a job's token acts for its submitter, in the cluster's project, and
only for what jobs call back (``JOB_PERMISSIONS``): never more than the submitter may do,
nor more than a job needs. (tests/e2e/test_security.py submits a real job as such a user.)"""

from __future__ import annotations

from raydeck.core.models import TokenCreate
from raydeck.core.models.access import (
    AccountCreate,
    CustomRoleCreate,
    ProjectCreate,
    RoleBindingCreate,
)
from raydeck.server.services import access, job_tokens, tokens
from tests.conftest import Api

NARROW = ["jobs.submit", "jobs.get", "models.get", "models.list", "clusters.get"]


def test_a_job_token_never_exceeds_its_submitters_role(static_api: Api) -> None:
    api = static_api
    cluster = api.http.post("/api/v1/clusters", json={"name": "c"}, headers=api.headers())
    assert cluster.status_code == 201
    with api.app.state.raydeck.db.session() as session:
        access.create_role(session, CustomRoleCreate(name="narrow", permissions=NARROW))
        access.create_account(session, AccountCreate(name="nora"))
        access.bind_role(session, RoleBindingCreate(account="nora", role="narrow"))
        access.create_project(session, ProjectCreate(name="other"))
        access.bind_role(session, RoleBindingCreate(account="nora", role="admin", project="other"))
        own = tokens.create_token(session, TokenCreate(name="nora-t", account="nora")).secret
        secret = job_tokens.issue_job_token(session, cluster.json()["id"], "sub-1", "nora")
    job = {"Authorization": f"Bearer {secret}"}
    mine = {"Authorization": f"Bearer {own}"}

    me = api.http.get("/api/v1/tokens/self", headers=job).json()
    assert (me["account"], me["roles"], me["scope_project"]) == ("nora", ["narrow"], "default")
    # In both the role and the job scope: allowed.
    assert api.http.get("/api/v1/models", headers=job).status_code == 200
    assert api.http.get("/api/v1/jobs/x", headers=job).status_code == 404  # past auth
    # Jobs may do it, the submitter may not.
    assert api.http.post("/api/v1/models", json={}, headers=job).status_code == 403
    assert api.http.get("/api/v1/connections", headers=job).status_code == 403
    # The submitter may do it, a job may not (with her own token she can).
    for method, path in [
        ("GET", "/api/v1/clusters/c"),
        ("POST", "/api/v1/clusters/c/jobs"),
    ]:
        assert api.http.request(method, path, json={}, headers=job).status_code == 403, path
        assert api.http.request(method, path, json={}, headers=mine).status_code != 403, path
    # Neither: admin-only and another project, where she is admin.
    assert api.http.post("/api/v1/clusters", json={"name": "d"}, headers=job).status_code == 403
    assert api.http.get("/api/v1/tokens", headers=job).status_code == 403
    other = {**job, "X-Raydeck-Project": "other"}
    assert api.http.get("/api/v1/models", headers=other).status_code == 403
    assert (
        api.http.get("/api/v1/models", headers={**mine, "X-Raydeck-Project": "other"}).status_code
        == 200
    )
