"""backends/os_user.py with real OS users (root only): per-cluster users in the base user's
group, directories only the Ray user enters, the environment a demoted process gets, and one
clear error when that user cannot run the cluster's Python."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raydeck.backends.base import BackendError
from raydeck.backends.os_user import (
    RayUsers,
    check_can_run,
    demoted_env,
    lookup_user,
    private_dir,
)
from raydeck.core.settings import DEFAULT_RAY_OS_USER

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates OS users: root only")


@pytest.fixture(scope="module")
def users() -> RayUsers:
    return RayUsers(DEFAULT_RAY_OS_USER)


def test_each_cluster_gets_its_own_user_in_the_shared_group(users: RayUsers) -> None:
    cluster_id = f"test-{secrets.token_hex(4)}"
    user = users.for_cluster(cluster_id)
    try:
        assert user.name == users.user_name(cluster_id) != users.base.name
        assert len(user.name) <= 32
        assert user.gid == users.gid and user.uid not in (0, users.base.uid)
        assert users.for_cluster(cluster_id) == user  # found, not created twice
        out = subprocess.run(
            ["id", "-u"], capture_output=True, text=True, check=True, **user.popen_kwargs()
        )
        assert int(out.stdout) == user.uid
    finally:
        users.release(cluster_id)
    assert lookup_user(user.name) is None
    shared = RayUsers(DEFAULT_RAY_OS_USER, per_cluster=False)
    assert shared.for_cluster(cluster_id) == shared.base


def test_private_dir_is_the_users_alone_and_refuses_what_others_planted(
    users: RayUsers, tmp_path: Path
) -> None:
    base = users.base
    made = private_dir(tmp_path / "mine", base)
    info = made.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (base.uid, base.gid, 0o700)
    (tmp_path / "loose").mkdir(mode=0o777)
    private_dir(tmp_path / "loose", base)  # an existing dir of ours: tightened
    assert stat.S_IMODE((tmp_path / "loose").stat().st_mode) == 0o700

    planted = tmp_path / "planted"
    planted.mkdir()
    os.chown(planted, 65534, 65534)  # nobody's
    with pytest.raises(BackendError, match="not a directory owned by"):
        private_dir(planted, base)
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(BackendError, match="not a directory owned by"):
        private_dir(tmp_path / "link", base)


def test_demoted_env_keeps_paths_and_ray_knobs_not_the_servers_secrets(users: RayUsers) -> None:
    server_env = {
        "PATH": "/usr/bin",
        "PYTHONPATH": "/src",
        "LC_ALL": "C.UTF-8",
        "RAY_memory_monitor_refresh_ms": "0",
        "RAYDECK_DATABASE_URL": "postgresql://u:secret@db/x",
        "RAYDECK_TOKEN": "rdk_admin",
        "RAYDECK_HOME": "/root/.raydeck",
        "AWS_SECRET_ACCESS_KEY": "k",
        "HOME": "/root",
    }
    env = demoted_env(server_env, users.base, Path("/var/lib/x/home"))
    assert env["PATH"] == "/usr/bin" and env["PYTHONPATH"] == "/src"
    assert env["LC_ALL"] == "C.UTF-8" and env["RAY_memory_monitor_refresh_ms"] == "0"
    assert env["HOME"] == "/var/lib/x/home" and env["USER"] == users.base.name
    assert not {"RAYDECK_DATABASE_URL", "RAYDECK_TOKEN", "RAYDECK_HOME"} & set(env)
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_a_python_the_ray_user_cannot_run_is_one_clear_error(
    users: RayUsers, tmp_path: Path
) -> None:
    env = demoted_env(os.environ, users.base, Path("/"))
    check_can_run(users.base, sys.executable, env, Path("/"))  # the shared venv: fine
    hidden = tmp_path / "root-only"  # as a venv under /root would be
    hidden.mkdir(mode=0o700)
    (hidden / "python").symlink_to(sys.executable)
    with pytest.raises(BackendError) as caught:
        check_can_run(users.base, str(hidden / "python"), env, Path("/"))
    message = caught.value.message
    assert f"the Ray OS user {users.base.name!r} cannot run" in message
    assert "RAYDECK_RAY_OS_USER=off" in message and "/usr/bin/python3.11" in message
