"""Hosts registry over the API: join tokens, joining, agent credentials, drain, delete."""

from __future__ import annotations

from datetime import timedelta

import httpx

from raydeck.backends.hosts import HostsClusterBackend
from raydeck.db.models import ClusterRow, HostNodeRow, JoinTokenRow, utcnow
from raydeck.server.services.tokens import hash_secret
from tests.conftest import Api

REGISTRATION = {
    "name": "h1",
    "address": "10.231.14.11",
    "num_cpus": 4,
    "memory": 8 * 1024**3,
    "resources": {"accel": 1},
    "labels": {"zone": "a"},
}


def _join_token(api: Api, **body: object) -> str:
    response = api.http.post("/api/v1/hosts/tokens", json=body, headers=api.headers())
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    assert secret.startswith("rdj_")
    return secret


def _join(api: Api, token: str, **overrides: object) -> dict[str, object]:
    response = api.http.post(
        "/api/v1/hosts/join",
        json={**REGISTRATION, **overrides},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    joined: dict[str, object] = response.json()
    return joined


def test_join_token_is_hashed_and_registers_a_host(static_api: Api) -> None:
    token = _join_token(static_api, expires_in_days=1)
    with static_api.app.state.raydeck.db.session() as session:
        row = session.query(JoinTokenRow).one()
        assert row.secret_hash == hash_secret(token) and token not in row.prefix + row.secret_hash
    joined = _join(static_api, token)
    credential = str(joined["credential"])
    assert credential.startswith("rda_")
    host = static_api.http.get("/api/v1/hosts/h1", headers=static_api.headers("viewer")).json()
    assert (host["state"], host["num_cpus"], host["free_cpus"]) == ("READY", 4, 4)
    assert host["labels"] == {"zone": "a"} and host["free_resources"] == {"accel": 1}
    # The same token registers more hosts until it expires; a name is taken once.
    _join(static_api, token, name="h2", address="10.231.14.12")
    again = static_api.http.post(
        "/api/v1/hosts/join", json=REGISTRATION, headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"
    listed = static_api.http.get("/api/v1/hosts", headers=static_api.headers()).json()["items"]
    assert [h["name"] for h in listed] == ["h1", "h2"]


def test_bad_join_tokens_are_refused(static_api: Api) -> None:
    def join_with(secret: str) -> int:
        return static_api.http.post(
            "/api/v1/hosts/join",
            json=REGISTRATION,
            headers={"Authorization": f"Bearer {secret}"},
        ).status_code

    assert join_with("rdj_wrong") == 401
    assert join_with(static_api.tokens["admin"]) == 401  # an API token is no join token
    expired = _join_token(static_api)
    with static_api.app.state.raydeck.db.session() as session:
        session.query(JoinTokenRow).update({"expires_at": utcnow() - timedelta(seconds=1)})
    assert join_with(expired) == 401
    revoked = _join_token(static_api)
    token_id = static_api.http.get("/api/v1/hosts/tokens", headers=static_api.headers()).json()[
        "items"
    ][-1]["id"]
    assert (
        static_api.http.delete(
            f"/api/v1/hosts/tokens/{token_id}", headers=static_api.headers()
        ).status_code
        == 200
    )
    assert join_with(revoked) == 401
    bad = static_api.http.post(
        "/api/v1/hosts/join",
        json={**REGISTRATION, "address": "not-an-ip"},
        headers={"Authorization": f"Bearer {_join_token(static_api)}"},
    )
    assert bad.status_code == 400 and "address" in bad.text
    assert static_api.http.get("/api/v1/hosts", headers=static_api.headers()).json()["items"] == []


def test_only_admins_manage_hosts(static_api: Api) -> None:
    user = static_api.headers("user")
    assert static_api.http.post("/api/v1/hosts/tokens", json={}, headers=user).status_code == 403
    assert static_api.http.get("/api/v1/hosts", headers=user).status_code == 200


def test_agent_sync_authenticates_and_answers_desired_nodes(static_api: Api) -> None:
    joined = _join(static_api, _join_token(static_api))
    agent = {"Authorization": f"Bearer {joined['credential']}"}
    sync = static_api.http.post("/api/v1/agent/sync", json={"nodes": []}, headers=agent)
    assert sync.status_code == 200, sync.text
    assert sync.json()["host"] == "h1" and sync.json()["nodes"] == []
    # Neither an API token nor a join token syncs a host.
    for secret in (static_api.tokens["admin"], "rda_unknown"):
        denied = static_api.http.post(
            "/api/v1/agent/sync", json={"nodes": []}, headers={"Authorization": f"Bearer {secret}"}
        )
        assert denied.status_code == 401
    # Deleting the host revokes its credential.
    deleted = static_api.http.delete("/api/v1/hosts/h1", headers=static_api.headers())
    assert deleted.status_code == 200
    gone = static_api.http.post("/api/v1/agent/sync", json={"nodes": []}, headers=agent)
    assert gone.status_code == 401


def test_a_host_holding_nodes_is_only_deleted_with_force(static_api: Api) -> None:
    host_id = str(_join(static_api, _join_token(static_api))["host"]["id"])  # type: ignore[index]
    with static_api.app.state.raydeck.db.session() as session:
        session.add(
            HostNodeRow(
                id="hn-0000000000000001",
                cluster_id="cl-x",
                host_id=host_id,
                node="head",
                pool="head",
                port_base=30000,
                launch={"num_cpus": 1},
                state="RUNNING",
            )
        )
    host = static_api.http.get("/api/v1/hosts/h1", headers=static_api.headers()).json()
    assert host["free_cpus"] == 3 and host["nodes"] == ["cl-x/head"]
    refused = static_api.http.delete("/api/v1/hosts/h1", headers=static_api.headers())
    assert refused.status_code == 412 and "drain" in refused.json()["error"]["message"]
    drained = static_api.http.post("/api/v1/hosts/h1/drain", headers=static_api.headers())
    assert drained.json()["state"] == "DRAINING"
    forced = static_api.http.delete("/api/v1/hosts/h1?force=true", headers=static_api.headers())
    assert forced.status_code == 200
    with static_api.app.state.raydeck.db.session() as session:
        assert session.query(HostNodeRow).count() == 0


def test_a_cluster_no_host_could_ever_hold_is_refused_at_create(static_api: Api) -> None:
    state = static_api.app.state.raydeck
    state.backends["hosts"] = HostsClusterBackend(state.db)

    def create(**pool: object) -> httpx.Response:
        body = {"name": "big", "backend": "hosts", "worker_pools": [{"name": "w", **pool}]}
        return static_api.http.post("/api/v1/clusters", json=body, headers=static_api.headers())

    none_yet = create()
    assert none_yet.status_code == 400 and none_yet.json()["error"]["field"] == "backend"
    assert "raydeck node join" in none_yet.json()["error"]["message"]
    _join(static_api, _join_token(static_api))  # h1: 4 CPUs, accel=1, zone=a
    too_big = create(num_cpus=8)
    error = too_big.json()["error"]
    assert too_big.status_code == 400 and error["field"] == "worker_pools[0]"
    assert "each needs 8 CPU" in error["message"] and "h1 has 4 CPU" in error["message"]
    assert create(resources={"accel": 2}).status_code == 400
    assert create(host_labels={"zone": "b"}).status_code == 400
    listed = static_api.http.get("/api/v1/clusters", headers=static_api.headers()).json()
    assert listed["items"] == []  # nothing stored by a refused create
    fits = create(num_cpus=2, replica_count=2, placement="spread", host_labels={"zone": "a"})
    assert fits.status_code == 201, fits.text
    assert fits.json()["worker_pools"][0]["placement"] == "spread"


def test_agents_ship_log_lines_of_their_own_nodes_only(static_api: Api) -> None:
    token = _join_token(static_api)
    h1 = _join(static_api, token)
    h2 = _join(static_api, token, name="h2", address="10.231.14.12")
    with static_api.app.state.raydeck.db.session() as session:
        session.add(
            ClusterRow(
                id="cl-logs",
                name="logs",
                state="RUNNING",
                backend="hosts",
                ray_version="",
                spec={"head": {}, "worker_pools": []},
                ray_auth_token_ciphertext="",
            )
        )
        session.add(
            HostNodeRow(
                id="hn-00000000000000aa",
                cluster_id="cl-logs",
                host_id=str(h1["host"]["id"]),  # type: ignore[index]
                node="head",
                pool="head",
                port_base=30000,
                launch={"num_cpus": 1},
                state="RUNNING",
            )
        )

    def ship(joined: dict[str, object], offset: int, text: str) -> dict[str, int]:
        chunk = {
            "node_id": "hn-00000000000000aa",
            "file": "raylet.out",
            "offset": offset,
            "size": len(text.encode()),
            "text": text,
        }
        response = static_api.http.post(
            "/api/v1/agent/logs",
            json={"chunks": [chunk]},
            headers={"Authorization": f"Bearer {joined['credential']}"},
        )
        assert response.status_code == 200, response.text
        positions: dict[str, int] = response.json()["positions"]
        return positions

    key = "hn-00000000000000aa/raylet.out"
    assert ship(h1, 0, "first line\nsecond line\n") == {key: 23}
    assert ship(h1, 5, "out of order\n") == {key: 23}  # refused: resume at 23
    assert ship(h1, 23, "third line\n") == {key: 34}
    assert ship(h2, 34, "not h2's node\n") == {}  # another host cannot write for it
    logs = static_api.http.get(
        "/api/v1/logs", params={"resource": "cluster/logs"}, headers=static_api.headers()
    ).json()["items"]
    assert [(e["source"], e["text"]) for e in logs] == [
        ("head/raylet.out", "first line"),
        ("head/raylet.out", "second line"),
        ("head/raylet.out", "third line"),
    ]
