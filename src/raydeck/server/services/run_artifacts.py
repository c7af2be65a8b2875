"""The files a custom job or a trial wrote into its output directory, to list and download.

Only the directories the training code is told about are served (``AIP_MODEL_DIR``,
``AIP_CHECKPOINT_DIR``, ``AIP_TENSORBOARD_LOG_DIR`` and the hypertune metrics files): a
job's ``base_output_dir`` may be any directory the user named, and the replica logs are
served redacted by the logs endpoints instead.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from raydeck.core.errors import InvalidArgumentError, NotFoundError
from raydeck.core.models.training import ArtifactFile

__all__ = ["ARTIFACT_DIRS", "MAX_LISTED", "artifact_file", "list_artifacts"]

ARTIFACT_DIRS = ("model", "checkpoints", "logs", "metrics")
MAX_LISTED = 10_000  # a runaway checkpoint loop should not make a listing unbounded


def _inside(path: Path, root: Path) -> bool:
    """``path`` resolves (symlinks followed) to somewhere under ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def list_artifacts(output_dir: str) -> list[ArtifactFile]:
    """Files under the artifact directories, sorted by path; symlinks leaving them skipped."""
    root = Path(output_dir)
    found: list[ArtifactFile] = []
    for name in ARTIFACT_DIRS:
        top = root / name
        if not top.is_dir() or not _inside(top, root):
            continue
        for directory, subdirs, files in os.walk(top):
            subdirs.sort()
            for file_name in sorted(files):
                path = Path(directory) / file_name
                if not _inside(path, top) or not path.is_file():
                    continue
                stat = path.stat()
                found.append(
                    ArtifactFile(
                        path=path.relative_to(root).as_posix(),
                        size=stat.st_size,
                        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                    )
                )
                if len(found) >= MAX_LISTED:
                    break
    return sorted(found, key=lambda f: f.path)


def artifact_file(output_dir: str, relative: str) -> Path:
    """The file at ``relative`` (e.g. ``model/model.joblib``): 400 for a path outside the
    artifact directories ('..', absolute, a symlink out), 404 when there is no such file."""
    parts = PurePosixPath(relative).parts
    if (
        not parts
        or relative.startswith("/")
        or "\\" in relative
        or any(p in ("..", ".") for p in parts)
        or parts[0] not in ARTIFACT_DIRS
    ):
        raise InvalidArgumentError(
            f"artifact path {relative!r} must be relative, inside one of "
            f"{', '.join(d + '/' for d in ARTIFACT_DIRS)}",
            field="path",
        )
    root = Path(output_dir)
    path = root.joinpath(*parts)
    if not _inside(path, root / parts[0]):
        raise InvalidArgumentError(
            f"artifact path {relative!r} leads outside the output directory", field="path"
        )
    if not path.is_file():
        raise NotFoundError(f"no artifact {relative!r} (yet)", field="path")
    return path
