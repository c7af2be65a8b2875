"""Artifact directories on local disk or any fsspec URI (``s3://``, ``gs://``, ``memory://``).

The registry writes with ``put_tree``/``remove_tree``; serving replicas and batch workers read
with ``fetch_artifact``, which returns a local directory a predictor can ``load``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "fetch_artifact",
    "filesystem",
    "get_tree",
    "is_local",
    "join_uri",
    "local_path",
    "put_tree",
    "remove_tree",
    "tree_digest",
]


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path without trailing '/') for a URI."""
    import fsspec  # only remote URIs need it; keeps replicas serving local artifacts light

    fs, path = fsspec.core.url_to_fs(uri)
    return fs, str(path).rstrip("/")


def get_tree(uri: str, dest: Path) -> None:
    """Copy the directory at a remote ``uri`` into the existing local directory ``dest``."""
    fs, root = filesystem(uri)
    for remote in fs.find(root):
        relative = str(remote)[len(root) :].lstrip("/")
        if not relative or ".." in Path(relative).parts:
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))


def put_tree(src: Path, uri: str) -> None:
    """Copy the local directory ``src`` to ``uri`` (which must not exist yet)."""
    fs, root = filesystem(uri)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = f"{root}/{path.relative_to(src).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)


def remove_tree(uri: str) -> None:
    if is_local(uri):
        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    fs, root = filesystem(uri)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def fetch_artifact(uri: str, cache_dir: Path) -> Path:
    """A local directory holding the artifact at ``uri``: local paths as they are, remote ones
    downloaded once into ``cache_dir`` (keyed by URI; registry versions never change)."""
    if is_local(uri):
        return local_path(uri)
    target = cache_dir / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".partial-"))
    try:
        get_tree(uri, partial)
        os.replace(partial, target)  # atomic: concurrent fetches never see half a copy
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def tree_digest(root: Path) -> tuple[str, int]:
    """(sha256, total bytes) over relative paths and contents: equal trees, equal digests."""
    digest = hashlib.sha256()
    size = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        digest.update(b"\0")
    return digest.hexdigest(), size


def join_uri(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"
