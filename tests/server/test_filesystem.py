"""A real ``raydeck server`` keeps its home private (issue 11, finding 5): the home 0700, the
database with its -wal/-shm, the secret key, credentials and server info 0600, fixed at start
for a home an older version left world-readable; as root, the cluster data area is the Ray
group's to enter and only its shared places are the group's to write."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from raydeck.backends.os_user import RayUsers
from raydeck.core.errors import FailedPreconditionError
from raydeck.core.settings import DEFAULT_RAY_OS_USER, Settings
from raydeck.devtools import ServerProcess
from raydeck.server.filesystem import prepare_cluster_data, ray_users
from raydeck.server.services.artifacts import ArtifactStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="raydeck-test-data-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(home: Path, env: dict[str, str]) -> ServerProcess:
    server = ServerProcess(home, env=env)
    server.start()
    return server


@pytest.mark.slow
def test_a_home_left_readable_is_made_private_at_start(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    key = Fernet.generate_key().decode()  # a valid key: the server decrypts with it at start
    for name, text in {"secret.key": key, "credentials": "{}", "server.json": "{}"}.items():
        (home / name).write_text(text)
        (home / name).chmod(0o644)
    server = _run(home, {"RAYDECK_CLUSTER_DATA_DIR": str(data_dir)})
    try:
        # A write, so the database has its WAL files beside it.
        response = httpx.post(
            f"{server.url}/api/v1/projects",
            json={"name": "modes"},
            headers={"Authorization": f"Bearer {server.token}"},
        )
        assert response.status_code in (200, 201), response.text
        assert mode(home) == 0o700
        assert mode(home / "clusters") == 0o700
        for name in ("raydeck.db", "raydeck.db-wal", "raydeck.db-shm"):
            assert mode(home / name) == 0o600, name
        for name in ("secret.key", "credentials", "server.json"):
            assert mode(home / name) == 0o600, name
        if os.geteuid() == 0:  # Ray runs as raydeck-ray: the data area is its group's
            group = grp.getgrnam(DEFAULT_RAY_OS_USER).gr_gid
            assert (mode(data_dir), data_dir.stat().st_gid) == (0o750, group)
            for name in ("artifacts", "warehouse", "training"):
                shared = data_dir / name
                assert (mode(shared), shared.stat().st_gid) == (0o2770, group), name
    finally:
        server.stop()


@pytest.mark.slow
def test_isolation_off_prints_one_warning(tmp_path: Path) -> None:
    server = _run(tmp_path / "home", {"RAYDECK_RAY_OS_USER": "off"})
    try:
        warnings = [line for line in server.log_tail(200).splitlines() if "Warning" in line]
        assert len(warnings) == 1 and "RAYDECK_RAY_OS_USER off" in warnings[0], warnings
        assert mode(tmp_path / "home") == 0o700
        assert mode(tmp_path / "home" / "raydeck.db") == 0o600
    finally:
        server.stop()


def test_settings_place_the_cluster_data_outside_the_home_only_when_isolated(
    tmp_path: Path,
) -> None:
    off = Settings(home=tmp_path / "home", ray_os_user="off")
    assert off.ray_user is None and off.cluster_data_root == tmp_path / "home"
    assert off.warehouse_root == tmp_path / "home" / "warehouse"  # a laptop's layout
    on = Settings(home=tmp_path / "home", ray_os_user="someone")
    assert on.ray_user == "someone"
    assert on.cluster_data_root.parent == Path("/var/lib/raydeck")
    assert on.artifact_root == str(on.cluster_data_root / "artifacts")
    assert on.training_root == on.cluster_data_root / "training"
    chosen = Settings(home=tmp_path / "home", cluster_data_dir=tmp_path / "data")
    assert chosen.warehouse_root == tmp_path / "data" / "warehouse"
    default = Settings(home=tmp_path / "home")
    assert default.ray_user == (DEFAULT_RAY_OS_USER if os.geteuid() == 0 else None)


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns to the Ray group: root only")
def test_a_committed_model_version_is_the_ray_groups_to_read_not_to_change(
    tmp_path: Path,
) -> None:
    group = RayUsers(DEFAULT_RAY_OS_USER).gid
    store = tmp_path / "artifacts"
    store.mkdir()
    os.chown(store, -1, group)
    store.chmod(0o2770)
    artifacts = ArtifactStore(str(store), store / ".staging")
    with artifacts.staging() as staged:
        (staged / "sub").mkdir()
        (staged / "model.joblib").write_bytes(b"x")
        (staged / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
        (staged / "sub" / "run.sh").chmod(0o700)
        assert mode(staged) == 0o700  # in flight: the server's alone
        uri = artifacts.version_uri("m1", "1")
        artifacts.commit(staged, uri)
    version = Path(uri)
    for directory in (store / "models", store / "models" / "m1", version, version / "sub"):
        assert (mode(directory), directory.stat().st_gid) == (0o2750, group), directory
    assert (mode(version / "model.joblib"), (version / "model.joblib").stat().st_gid) == (
        0o640,
        group,
    )
    assert mode(version / "sub" / "run.sh") == 0o750


def test_the_cluster_data_area_cannot_be_inside_the_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", cluster_data_dir=tmp_path / "home" / "data")
    with pytest.raises(FailedPreconditionError, match="must not be inside RAYDECK_HOME"):
        prepare_cluster_data(settings, RayUsers("nobody", create=False))


def test_root_is_no_ray_os_user(tmp_path: Path) -> None:
    with pytest.raises(FailedPreconditionError, match="RAYDECK_RAY_OS_USER"):
        ray_users(Settings(home=tmp_path, ray_os_user="root"))
    assert ray_users(Settings(home=tmp_path, ray_os_user="off")) is None
