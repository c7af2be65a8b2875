"""The server's files on disk: a private home, and the cluster data area Ray users share.

``RAYDECK_HOME`` is 0700 and its secrets 0600 (database and its -wal/-shm, secret key,
credentials, server info), fixed at every start for homes made by older versions. When Ray
runs as another OS user (``RAYDECK_RAY_OS_USER``), what clusters read and write lives in the
cluster data area instead (layout: core/settings.py): its root is the Ray group's to enter
(0750), the shared places in it are the group's to write (2770: setgid, so files the server
creates there belong to the group too) and the server's umask becomes 007 so those files are
group-readable and -writable (a DuckDB file the server created is one a job may write).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from raydeck.backends.os_user import RayUsers, is_root, lookup_user
from raydeck.core.errors import FailedPreconditionError
from raydeck.core.settings import DEFAULT_RAY_OS_USER, Settings

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "SHARED_DIR_MODE",
    "isolation_warning",
    "prepare_cluster_data",
    "ray_users",
    "secure_database_files",
    "secure_home",
    "sqlite_path",
]

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SHARED_DIR_MODE = 0o2770  # setgid: entries take the directory's group
_DATA_ROOT_MODE = 0o750
_PUBLIC_DIR_MODE = 0o755
_SERVER_UMASK = 0o007
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def sqlite_path(settings: Settings) -> Path | None:
    url = settings.db_url
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def secure_home(settings: Settings) -> None:
    """Create (or fix) the home 0700 and the secrets in it 0600; pre-create the SQLite file
    0600, so SQLite gives its -wal/-shm files the same mode."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    _chmod(home, PRIVATE_DIR_MODE)
    settings.clusters_dir.mkdir(parents=True, exist_ok=True)
    _chmod(settings.clusters_dir, PRIVATE_DIR_MODE)
    for path in (settings.secret_key_path, settings.credentials_path, settings.server_info_path):
        _chmod(path, PRIVATE_FILE_MODE)
    db = sqlite_path(settings)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        secure_database_files(settings)


def secure_database_files(settings: Settings) -> None:
    db = sqlite_path(settings)
    if db is not None:
        for suffix in _SQLITE_SUFFIXES:
            _chmod(db.with_name(db.name + suffix), PRIVATE_FILE_MODE)


def ray_users(settings: Settings) -> RayUsers | None:
    """Who runs the Ray processes (None: the server's own user). Creating users, and
    switching to them, takes root: a named user without root is a configuration error."""
    name = settings.ray_user
    if name is None:
        return None
    if not is_root():
        raise FailedPreconditionError(
            f"RAYDECK_RAY_OS_USER={name}: running Ray as another OS user needs the server to "
            "run as root (or set RAYDECK_RAY_OS_USER=off)",
            field="RAYDECK_RAY_OS_USER",
        )
    existing = lookup_user(name)
    if existing is not None and (existing.uid == 0 or existing.gid == 0):
        raise FailedPreconditionError(
            f"RAYDECK_RAY_OS_USER={name} is root or in the root group: that is no isolation; "
            "name an unprivileged user or set RAYDECK_RAY_OS_USER=off",
            field="RAYDECK_RAY_OS_USER",
        )
    return RayUsers(
        name,
        per_cluster=settings.ray_os_user_per_cluster,
        create=name == DEFAULT_RAY_OS_USER,
    )


def prepare_cluster_data(settings: Settings, users: RayUsers) -> None:
    """The cluster data area, entered by the Ray group; its shared places writable by it."""
    root = settings.cluster_data_root.absolute()
    if _inside(root, settings.home):
        raise FailedPreconditionError(
            f"RAYDECK_CLUSTER_DATA_DIR {root} must not be inside RAYDECK_HOME {settings.home}: "
            "the Ray OS user cannot enter the home",
            field="RAYDECK_CLUSTER_DATA_DIR",
        )
    gid = users.gid  # creates the base user when it is ours to create
    for parent in reversed(root.parents):  # e.g. /var/lib/raydeck: everyone may enter
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, _PUBLIC_DIR_MODE)
            os.chmod(parent, _PUBLIC_DIR_MODE)
    os.umask(_SERVER_UMASK)
    _shared_dir(root, gid, _DATA_ROOT_MODE)
    shared = [settings.warehouse_root, settings.training_root]
    if "://" not in settings.artifact_root:
        shared.append(Path(settings.artifact_root))
    for path in shared:
        if _inside(path, root):  # an admin's own directory elsewhere keeps its modes
            _shared_dir(path, gid, SHARED_DIR_MODE)
    _shared_dir(settings.ray_temp_root, gid, _DATA_ROOT_MODE)


def isolation_warning(settings: Settings) -> str | None:
    """One line for the operator when Ray jobs run as the server's own OS user."""
    if settings.ray_user is not None:
        return None
    return (
        "Warning: Ray processes run as this server's OS user (RAYDECK_RAY_OS_USER off): "
        f"jobs, models and notebooks on local clusters can read {settings.home} (database, "
        "keys, admin token). Run the server as root to isolate them."
    )


def _shared_dir(path: Path, gid: int, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    info = path.stat()
    if info.st_gid != gid:
        os.chown(path, -1, gid)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def _chmod(path: Path, mode: int) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return  # never follow a link out of the home
    if stat.S_IMODE(info.st_mode) != mode:
        log.info("fixing the mode of %s: %o -> %o", path, stat.S_IMODE(info.st_mode), mode)
        os.chmod(path, mode)


def _inside(path: Path, root: Path) -> bool:
    return path.absolute().is_relative_to(root.absolute())
