"""The registry's artifact store: bring an artifact into a local staging directory (from a
path, an fsspec URI or an uploaded .tar.gz), then move it to its final place in the store.

Staging lives under ``RAYDECK_HOME`` so that, for the default local store, the final step is
a rename; a failed request leaves nothing behind but an emptied staging directory.

A store made for a user's request (``user_project``) reads only sources that project may
name (``uri_policy``: its own area or admin-allowlisted roots, public http(s) addresses).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.settings import Settings
from raydeck.runtime.artifacts import (
    filesystem,
    get_tree,
    is_local,
    local_path,
    put_tree,
    remove_tree,
)
from raydeck.server.services import uri_policy
from raydeck.server.services.model_artifacts import ArtifactLimits, TarLimiter

__all__ = ["ArtifactStore"]

log = logging.getLogger(__name__)

_TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _is_tarball(name: str) -> bool:
    return name.endswith(_TARBALL_SUFFIXES)


class ArtifactStore:
    def __init__(
        self,
        root: str,
        staging_root: Path,
        limits: ArtifactLimits | None = None,
        *,
        settings: Settings | None = None,
        user_project: str | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self.staging_root = staging_root
        self.limits = limits or ArtifactLimits()
        self.settings, self.user_project = settings, user_project

    @classmethod
    def from_settings(cls, settings: Settings, *, user_project: str | None) -> ArtifactStore:
        """``user_project``: the project of the user naming sources (checked with
        ``uri_policy``); None only for sources the server made itself (pipeline outputs)."""
        return cls(
            settings.artifact_root,
            settings.home / "artifacts" / ".staging",
            ArtifactLimits.from_settings(settings),
            settings=settings,
            user_project=user_project,
        )

    def model_uri(self, model_id: str) -> str:
        return f"{self.root}/models/{model_id}"

    def version_uri(self, model_id: str, version_id: str) -> str:
        return f"{self.model_uri(model_id)}/{version_id}"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        self.staging_root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(dir=self.staging_root))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def stage_uri(self, uri: str, dest: Path) -> None:
        """Copy the directory (or .tar.gz) at ``uri`` into ``dest``; 400 naming artifact_uri."""
        if self.settings is not None and self.user_project is not None:
            uri = uri_policy.check_location(
                self.settings, self.user_project, uri, field="artifact_uri"
            )
            if uri.split("://", 1)[0].lower() in ("http", "https"):
                self._stage_url(self.settings, uri, dest)
                return
        if is_local(uri):
            self._stage_local(local_path(uri), uri, dest)
            return
        try:
            fs, path = filesystem(uri)
            if fs.isdir(path):
                get_tree(uri, dest)
            elif fs.isfile(path) and _is_tarball(path):
                with fs.open(path, "rb") as handle:
                    self.stage_tarball(handle, dest, field="artifact_uri")
            elif fs.exists(path):
                raise _not_a_directory(uri)
            else:
                raise InvalidArgumentError(
                    f"artifact_uri {uri!r} does not exist", field="artifact_uri"
                )
        except (ImportError, ValueError, OSError) as exc:  # unknown scheme, no driver, I/O
            raise InvalidArgumentError(
                f"cannot read artifact_uri {uri!r}: {exc}", field="artifact_uri"
            ) from exc

    def _stage_url(self, settings: Settings, url: str, dest: Path) -> None:
        """An http(s) artifact is a .tar.gz, fetched from the address the policy checked."""
        with tempfile.TemporaryFile(dir=self.staging_root) as archive:
            uri_policy.fetch_url(settings, url, archive, field="artifact_uri")
            archive.seek(0)
            self.stage_tarball(archive, dest, field="artifact_uri")

    def _stage_local(self, path: Path, uri: str, dest: Path) -> None:
        if not path.is_absolute():
            raise InvalidArgumentError(
                f"artifact_uri {uri!r} must be an absolute path on the server or a URI; "
                "to send a local directory, upload it (the SDK and CLI do this for you)",
                field="artifact_uri",
            )
        if path.is_dir():  # links stay links: the artifact checks refuse those leaving it
            shutil.copytree(path, dest, symlinks=True, dirs_exist_ok=True)
        elif path.is_file() and _is_tarball(path.name):
            with path.open("rb") as handle:
                self.stage_tarball(handle, dest, field="artifact_uri")
        elif path.exists():
            raise _not_a_directory(uri)
        else:
            raise InvalidArgumentError(
                f"artifact_uri {uri!r} does not exist on the server", field="artifact_uri"
            )

    def stage_tarball(self, archive: IO[bytes], dest: Path, *, field: str = "artifact") -> None:
        try:
            with tarfile.open(fileobj=archive, mode="r:*") as tar:
                # Every member is checked (paths, links, kinds, caps) before one is written;
                # where Python has tarfile's "data" filter, it applies as well.
                limiter = TarLimiter(self.limits, field)
                members = [limiter.check(member, dest) for member in tar]
                safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(dest, members=members, **safe)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise InvalidArgumentError(
                f"{field} is not a readable .tar.gz archive: {exc}", field=field
            ) from exc
        entries = list(dest.iterdir())
        if len(entries) == 1 and entries[0].is_dir():  # `tar czf m.tgz mymodel/`: unwrap
            inner = entries[0]
            for child in list(inner.iterdir()):
                child.rename(dest / child.name)
            inner.rmdir()

    def commit(self, staged: Path, uri: str) -> None:
        """Move a validated staging directory to its final ``uri`` in the store."""
        if not is_local(uri):
            remove_tree(uri)  # leftovers of an interrupted earlier attempt
            put_tree(staged, uri)
            return
        target = local_path(uri)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, target)
        except OSError:  # store on another filesystem than RAYDECK_HOME
            shutil.copytree(staged, target)

    def remove(self, uri: str) -> None:
        """Best effort: runs after the rows are gone, when failing the request would lie."""
        try:
            remove_tree(uri)
        except Exception:  # an unreachable object store leaks files, never corrupts rows
            log.warning("could not remove artifact %s", uri, exc_info=True)
            return
        if is_local(uri):  # drop the model's directory once its last version is gone
            parent = local_path(uri).parent
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def _not_a_directory(uri: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"artifact_uri {uri!r} must be a directory (or a .tar.gz of one)", field="artifact_uri"
    )
