"""The `raydeck` command as a user runs it: real process, real server, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raydeck.client import RaydeckClient
from raydeck.core.errors import NotFoundError
from raydeck.devtools import free_port
from tests.ray_fixtures import LiveServer


def raydeck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raydeck.cli.main", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,  # `--wait` commands on a loaded 2-core machine take minutes
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["clusters", "get", "ghost"], ["not_found", "ghost"]),
        # the pattern survives the console's markup ([..] is rich's tag syntax)
        (
            ["clusters", "create", "Bad_Name", "--no-wait"],
            ["invalid_argument", "name", "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$"],
        ),
        # --pool errors name the key as typed, not the API field (worker_pools.0.replica_count)
        (
            ["clusters", "create", "x", "-p", "name=w,replicas=0", "--no-wait"],
            ["--pool #1 replicas"],
        ),
        (["clusters", "create", "x", "-p", "name=w,replicas=two", "--no-wait"], ["replicas='two'"]),
        (["clusters", "create", "x", "-p", "name=w,colour=red", "--no-wait"], ["colour"]),
        (["clusters", "scale", "ghost", "-p", "w", "-r", "2", "--no-wait"], ["not_found"]),
        (["clusters", "scale", "ghost", "-p", "w", "-r", "0"], ["replica_count"]),
        (["jobs", "get", "job-nope"], ["not_found"]),
        (["jobs", "submit", "-c", "ghost", "--", "echo", "hi"], ["not_found", "ghost"]),
        # with a working dir to upload: the same error, not Ray's "Version check returned 404"
        (["jobs", "submit", "-c", "ghost", "-w", ".", "--", "echo", "hi"], ["not_found", "ghost"]),
        (["clusters", "list", "--state", "SLEEPING"], ["SLEEPING"]),
        (
            ["clusters", "create", "x", "--backend", "hosts", "--spread", "--no-wait"],
            ["invalid_argument", "no hosts have joined", "raydeck node join"],
        ),
        (["hosts", "get", "ghost"], ["not_found", "ghost"]),
        (["hosts", "drain", "ghost"], ["not_found", "ghost"]),
        (["clusters", "repair", "ghost", "--no-wait"], ["not_found", "ghost"]),
    ],
)
def test_errors_are_one_line(live_server: LiveServer, args: list[str], needles: list[str]) -> None:
    assert_one_line_error(raydeck(live_server.client_env(), *args), *needles)


def test_sdk_submit_with_working_dir_checks_the_cluster_first(
    live_client: RaydeckClient, tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text("print('hi')\n")
    with pytest.raises(NotFoundError) as missing:
        live_client.jobs.submit("ghost", "python job.py", working_dir=tmp_path)
    assert missing.value.field == "cluster" and "ghost" in missing.value.message
    assert "Version check" not in missing.value.message


def test_unreachable_server_is_one_line() -> None:
    env = {"RAYDECK_SERVER": f"http://127.0.0.1:{free_port()}", "RAYDECK_TOKEN": "x"}
    result = raydeck({**env, "PATH": "/usr/bin"}, "clusters", "list")
    assert_one_line_error(result, "unavailable", "cannot reach")


def test_wrong_token_is_one_line(live_server: LiveServer) -> None:
    env = {**live_server.client_env(), "RAYDECK_TOKEN": "rdk_wrong"}
    assert_one_line_error(raydeck(env, "clusters", "list"), "unauthenticated")


def test_tokens_create_list_revoke(live_server: LiveServer) -> None:
    env = live_server.client_env()
    created = raydeck(env, "tokens", "create", "cli-viewer", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("rdk_")
    listed = raydeck(env, "tokens", "list")
    assert "cli-viewer" in listed.stdout and secret not in listed.stdout
    viewer_env = {**env, "RAYDECK_TOKEN": secret}
    assert raydeck(viewer_env, "clusters", "list").returncode == 0
    assert_one_line_error(
        raydeck(viewer_env, "clusters", "create", "v", "--no-wait"), "permission_denied"
    )
    assert raydeck(env, "tokens", "revoke", "cli-viewer").returncode == 0
    assert_one_line_error(raydeck(viewer_env, "clusters", "list"), "unauthenticated")


def test_first_start_is_quiet_about_migrations(live_server: LiveServer) -> None:
    log = live_server.log_path.read_text()
    assert "Created the admin token" in log and "Running upgrade" not in log


def test_credentials_file_is_private(live_server: LiveServer) -> None:
    mode = (live_server.home / "credentials").stat().st_mode & 0o777
    assert mode == 0o600
