"""Ray runs as unprivileged OS users (issue 11, finding 1, cluster side; finding 5).

A job on a real cluster of a real server (as root) runs as that cluster's own OS user: it
cannot read the server's database, secret key or admin credentials, nor another cluster's Ray
temp dirs or its processes' environment (that cluster's Ray token), and every process of the
cluster is owned by that user. Deleting a cluster removes its user.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import textwrap
from pathlib import Path

import pytest

from raydeck.backends.local import find_cluster_processes
from raydeck.backends.os_user import RayUsers, lookup_user
from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate, JobState
from raydeck.core.models.warehouse import ConnectionCreate
from raydeck.core.settings import DEFAULT_RAY_OS_USER
from tests.ray_fixtures import LiveServer

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray runs as other OS users only as root"),
]

PROBE = """
    import json, os, sys

    def attempt(action, path):
        try:
            action(path)
            return "read"
        except PermissionError:
            return "denied"
        except OSError as exc:
            return f"other: {exc}"

    paths = json.loads(sys.argv[1])
    print("PROBE " + json.dumps({
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(set(os.getgroups()) - {os.getgid()}),
        "files": {p: attempt(lambda q: open(q, "rb").read(1), p) for p in paths["files"]},
        "dirs": {p: attempt(os.listdir, p) for p in paths["dirs"]},
    }), flush=True)
"""


def _state(home: Path, cluster_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (home / "clusters" / cluster_id / "state.json").read_text()
    )
    return data


def _owner_and_mode(path: Path) -> tuple[str, int]:
    info = path.stat()
    return pwd.getpwuid(info.st_uid).pw_name, stat.S_IMODE(info.st_mode)


def test_a_job_runs_as_its_clusters_user_and_reaches_nothing_of_the_server_or_others(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, cluster_tmp: Path
) -> None:
    home = live_server.home
    # A stored secret, so the secret key exists.
    live_client.connections.create(
        ConnectionCreate(
            name="iso-secret", kind="sql", url="postgresql+psycopg://app@127.0.0.1:9/x", secret="pw"
        )
    )
    assert (home / "secret.key").is_file()
    live_client.clusters.create(
        ClusterCreate.model_validate({"name": "iso-other", "head": {"num_cpus": 1}})
    )
    other = live_client.clusters.wait("iso-other", timeout=180)
    own = live_client.clusters.get(cluster)
    users = RayUsers(DEFAULT_RAY_OS_USER)
    own_user, other_user = users.user_name(own.id), users.user_name(other.id)
    other_base = Path(str(_state(home, other.id)["base_dir"]))
    try:
        # Every process of each cluster runs as that cluster's user.
        for cluster_id, name in ((own.id, own_user), (other.id, other_user)):
            owners = {p.username() for p in find_cluster_processes(cluster_id)}
            assert owners == {name}, owners
        # The parent of a cluster's Ray temp dirs is its user's alone (Ray's own session
        # dirs inside are 0777).
        assert _owner_and_mode(other_base) == (other_user, 0o700)
        assert _owner_and_mode(home) == ("root", 0o700)

        raylet = next(p for p in find_cluster_processes(other.id) if p.name() == "raylet")
        secrets = [home / "raydeck.db", home / "secret.key", home / "credentials"]
        paths = {
            "files": [str(p) for p in secrets] + [f"/proc/{raylet.pid}/environ"],
            "dirs": [str(other_base), str(home)],
        }
        (cluster_tmp / "probe.py").write_text(textwrap.dedent(PROBE))
        job = live_client.jobs.submit(
            cluster, f"python probe.py '{json.dumps(paths)}'", working_dir=cluster_tmp
        )
        finished = live_client.jobs.wait(job.id, timeout=180)
        logs = live_client.jobs.logs(job.id)
        assert finished.state is JobState.SUCCEEDED, logs[-3000:]
        line = next(line for line in logs.splitlines() if line.startswith("PROBE "))
        probe = json.loads(line.removeprefix("PROBE "))

        expected = lookup_user(own_user)
        assert expected is not None and probe["uid"] == expected.uid
        assert (probe["gid"], probe["groups"]) == (users.gid, [])  # no root group, no others
        assert set(probe["files"].values()) == {"denied"}, probe["files"]
        assert set(probe["dirs"].values()) == {"denied"}, probe["dirs"]
    finally:
        live_client.clusters.delete("iso-other")
        live_client.clusters.wait_deleted("iso-other", timeout=180)
    assert find_cluster_processes(other.id) == []
    assert lookup_user(other_user) is None  # the cluster's user went with it
    assert not other_base.exists()
