"""Running Ray processes as an unprivileged OS user, apart from the control plane's secrets.

Every backend that starts Ray processes on a host (``local``, the ``hosts`` agent) builds the
demoted process from here: :class:`OsUser` gives the ``subprocess.Popen`` arguments (or a
``runuser`` prefix for a shell), :func:`demoted_env` the explicit environment it gets,
:func:`private_dir` a 0700 directory only that user (and root) can enter.

The demotion uses ``Popen(user=, group=, extra_groups=[], umask=)``: CPython switches the
identity in C between fork and exec (no ``preexec_fn``, which is unsafe in the server's
threads), there is no PAM session and no extra parent process (``runuser`` keeps one when it
opens a session), so the ``ray start`` we spawn is the process we supervise.

Identities (see :class:`RayUsers`): one base user (``raydeck-ray`` by default, created by the
server when it runs as root) whose primary group owns the shared cluster data area, and, per
cluster by default, a user of its own (``<base>-<8 hex of the cluster id>``, same primary
group), so that one cluster's jobs cannot read another's Ray temp dirs, signal its processes
or read their environment (the cluster's Ray token) through ``/proc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydeck.backends.base import BackendError

__all__ = [
    "DEMOTED_UMASK",
    "OsUser",
    "RayUsers",
    "check_can_run",
    "demoted_env",
    "ensure_user",
    "is_root",
    "lookup_user",
    "private_dir",
    "remove_user",
]

log = logging.getLogger(__name__)

# Files Ray processes create are shared with their group (the cluster data area is group
# owned), never with other OS users.
DEMOTED_UMASK = 0o007
_NOLOGIN = "/usr/sbin/nologin"
# What a demoted process keeps of the server's environment: nothing that could carry the
# control plane's secrets (RAYDECK_DATABASE_URL, RAYDECK_TOKEN, ...), only what locates
# programs and libraries, locale, proxies and Ray's own tuning knobs.
_KEPT_ENV = frozenset(
    {
        "PATH",
        "PYTHONPATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CUDA_VISIBLE_DEVICES",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    }
)
_KEPT_PREFIXES = ("LC_", "RAY_", "OMP_", "MKL_")
_USERS_LOCK = threading.Lock()
_LOCK_RETRIES = 20


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments that make ``subprocess.Popen`` start the child as this user."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": DEMOTED_UMASK}

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as this user from a root shell (where Popen's arguments cannot go)."""
        return ["runuser", "-u", self.name, "--", *argv]


def lookup_user(name: str) -> OsUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _run_admin(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """useradd/userdel, retried while another process holds /etc/passwd's lock."""
    with _USERS_LOCK:
        for attempt in range(_LOCK_RETRIES):
            try:
                result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as exc:
                raise BackendError(f"cannot run {argv[0]}: {exc}") from exc
            if "lock" not in result.stderr.lower() or attempt == _LOCK_RETRIES - 1:
                return result
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def ensure_user(name: str, *, group: int | None = None) -> OsUser:
    """The system user ``name``, created (no home, no login shell) when missing; in group
    ``group`` (a gid) when given, else in a group of its own name."""
    user = lookup_user(name)
    if user is not None:
        return user
    if not is_root():
        raise BackendError(f"the OS user {name!r} does not exist (only root can create it)")
    argv = ["useradd", "--system", "--no-create-home", "--shell", _NOLOGIN]
    argv += ["--gid", str(group)] if group is not None else ["--user-group"]
    result = _run_admin([*argv, name])
    user = lookup_user(name)  # another server may have created it meanwhile
    if user is None:
        raise BackendError(
            f"cannot create the OS user {name!r}: {result.stderr.strip() or result.returncode}"
        )
    log.info("created the OS user %s (uid %d) for Ray processes", name, user.uid)
    return user


def remove_user(name: str) -> None:
    """Delete ``name`` (best effort: a leftover system user with no files is harmless)."""
    if lookup_user(name) is None:
        return
    result = _run_admin(["userdel", "--force", name])
    if result.returncode != 0 and lookup_user(name) is not None:
        log.warning("could not remove the OS user %s: %s", name, result.stderr.strip())


class RayUsers:
    """Which OS user runs the Ray processes of each cluster.

    ``per_cluster``: every cluster gets ``<base>-<8 hex>`` (created on first start, removed
    when the cluster is deleted), sharing the base user's primary group; otherwise every
    cluster runs as the base user itself.
    """

    def __init__(self, base: str, *, per_cluster: bool = True, create: bool = True) -> None:
        self.base_name = base
        self.per_cluster = per_cluster
        self._create = create
        self._base: OsUser | None = None

    @property
    def base(self) -> OsUser:
        if self._base is None:
            if self._create:
                self._base = ensure_user(self.base_name)
            else:
                found = lookup_user(self.base_name)
                if found is None:
                    raise BackendError(
                        f"RAYDECK_RAY_OS_USER: the OS user {self.base_name!r} does not exist"
                    )
                self._base = found
        return self._base

    @property
    def gid(self) -> int:
        """The group of the shared cluster data area."""
        return self.base.gid

    def user_name(self, cluster_id: str) -> str:
        if not self.per_cluster:
            return self.base_name
        digest = hashlib.sha256(cluster_id.encode()).hexdigest()[:8]
        return f"{self.base_name[:23]}-{digest}"  # 32 characters at most (useradd's limit)

    def for_cluster(self, cluster_id: str) -> OsUser:
        if not self.per_cluster:
            return self.base
        return ensure_user(self.user_name(cluster_id), group=self.gid)

    def release(self, cluster_id: str) -> None:
        """After a cluster's processes are gone: remove its own user."""
        if self.per_cluster:
            remove_user(self.user_name(cluster_id))


def demoted_env(env: Mapping[str, str], user: OsUser, home: Path) -> dict[str, str]:
    """The part of the server's ``env`` a process of ``user`` may see, with its own HOME."""
    kept = {k: v for k, v in env.items() if k in _KEPT_ENV or k.startswith(_KEPT_PREFIXES)}
    kept.update({"HOME": str(home), "USER": user.name, "LOGNAME": user.name, "SHELL": _NOLOGIN})
    return kept


def private_dir(path: Path, owner: OsUser | None, mode: int = 0o700) -> Path:
    """``path`` as a directory of ``owner`` (the current user when None) with ``mode``.

    An existing entry must be a real directory of ours or of ``owner`` (not a symlink, not
    someone else's, e.g. planted in /tmp): anything else is refused.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
        info = os.lstat(path)
        allowed = {os.geteuid()} | ({owner.uid} if owner is not None else set())
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in allowed:
            raise BackendError(
                f"{path} exists but is not a directory owned by this server or the Ray OS "
                "user; remove it",
                retryable=False,
            )
        if owner is not None and (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
        if stat.S_IMODE(info.st_mode) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise BackendError(f"cannot prepare the directory {path}: {exc}") from exc
    return path


def check_can_run(user: OsUser, python: str, env: Mapping[str, str], cwd: Path) -> None:
    """Fail with one clear message when ``user`` cannot run ``python`` and import raydeck."""
    try:
        result = subprocess.run(
            [python, "-c", "import raydeck"],
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            **user.popen_kwargs(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = str(exc)
    else:
        if result.returncode == 0:
            return
        lines = result.stderr.strip().splitlines()
        detail = lines[-1] if lines else f"exit code {result.returncode}"
    raise BackendError(
        f"the Ray OS user {user.name!r} cannot run the cluster's Python {python} "
        f"({detail}); every directory from / down to the virtualenv and to PYTHONPATH must "
        f"be readable by that user: build the venv outside /root (`make setup` uses "
        f"/usr/bin/python3.11), or set RAYDECK_RAY_OS_USER=off to run Ray as the server's user",
        retryable=False,
    )
