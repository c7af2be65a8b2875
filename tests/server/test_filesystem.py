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

from raydeck.core.settings import DEFAULT_RAY_OS_USER
from raydeck.devtools import ServerProcess

pytestmark = pytest.mark.slow


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


def test_a_home_left_readable_is_made_private_at_start(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    for name, text in {"secret.key": "k", "credentials": "{}", "server.json": "{}"}.items():
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


def test_isolation_off_prints_one_warning(tmp_path: Path) -> None:
    server = _run(tmp_path / "home", {"RAYDECK_RAY_OS_USER": "off"})
    try:
        warnings = [line for line in server.log_tail(200).splitlines() if "Warning" in line]
        assert len(warnings) == 1 and "RAYDECK_RAY_OS_USER off" in warnings[0], warnings
        assert mode(tmp_path / "home") == 0o700
        assert mode(tmp_path / "home" / "raydeck.db") == 0o600
    finally:
        server.stop()
