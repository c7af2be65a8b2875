"""Static checks of a staged model artifact: the control plane never loads a user's model.

Unpickling a file, ``torch.load``, or importing a custom predictor runs code the uploader
chose, so none of that happens in the server. A model is loaded only where it is used, on the
user's cluster (a Serve replica at deploy time, a batch prediction worker), and a model that
does not load fails there with the framework's error. Here the server looks at the files only:

- paths: regular files (and links that stay inside the artifact), at most
  ``RAYDECK_MODEL_ARTIFACT_MAX_FILES`` of them and ``RAYDECK_MODEL_ARTIFACT_MAX_BYTES`` in all;
- layout: the file names the framework's predictor reads (``raydeck.runtime.predictors``);
- format magic: a pickle's protocol header and final STOP opcode (never its opcodes' meaning),
  joblib's compressor headers, a zip archive holding TorchScript code, XGBoost JSON/UBJSON,
  LightGBM's text header, and for a custom predictor its manifest (JSON) and its module's source
  *parsed* with ``ast`` (bounded by ``RAYDECK_MODEL_SOURCE_MAX_BYTES``), never imported.

Every refusal is an ``InvalidArgumentError`` naming the request's artifact field and the file.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickletools
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.settings import Settings

__all__ = ["ArtifactLimits", "TarLimiter", "check_model_artifact", "model_files"]

# The model files each framework's predictor looks for, in its order (the first found is the
# one loaded): keep in step with ``artifact_files`` of raydeck.runtime.predictors.
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "sklearn": ("model.joblib", "model.pkl"),
    "xgboost": ("model.json", "model.ubj", "model.bst", "model.joblib", "model.pkl"),
    "lightgbm": ("model.txt", "model.joblib", "model.pkl"),
    "pytorch": ("model.pt", "model.pth"),
    "tensorflow": ("saved_model.pb",),
    "custom": ("raydeck_predictor.json",),
}

_PICKLE_PROTOCOLS = {b"\x80" + bytes([n]) for n in range(2, 6)}
_PICKLE_STOP = b"."
# Headers of joblib's compressed files (zlib, gzip, bz2, lzma, xz, lz4, joblib < 0.10's zlib).
_JOBLIB_COMPRESSED = (
    b"\x78",
    b"\x1f\x8b",
    b"BZh",
    b"\x5d\x00\x00",
    b"\xfd7zXZ",
    b"\x04\x22\x4d\x18",
)
_JOBLIB_OLD_ZLIB = b"ZF"
_ZIP_MAGIC = b"PK\x03\x04"
_SCAN_BYTES = 64 * 1024  # how much of a pickle is scanned for the class of its top object
# Frameworks whose predictor accepts only its own library's objects from a pickle.
_PICKLED_PACKAGE = {"xgboost": ("xgboost", "an XGBoost"), "lightgbm": ("lightgbm", "a LightGBM")}
_JSON_PARSE_MAX_BYTES = 64 * 1024**2  # larger XGBoost JSON: checked by its ends only
_CLASS_REF = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


@dataclass(frozen=True)
class ArtifactLimits:
    max_files: int = 1000
    max_bytes: int = 5 * 1024**3
    max_source_bytes: int = 1024**2

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactLimits:
        return cls(
            settings.model_artifact_max_files,
            settings.model_artifact_max_bytes,
            settings.model_source_max_bytes,
        )


class TarLimiter:
    """Checks each member of an archive before anything is extracted: no absolute names, no
    '..', no links leaving the destination, no devices or FIFOs (what Python 3.11.4+'s "data"
    filter refuses, done here because the interpreter may predate it: Debian's 3.11.2 does),
    and the file count and size caps, so an archive bomb is refused before it fills the disk."""

    def __init__(self, limits: ArtifactLimits, field: str) -> None:
        self.limits, self.field = limits, field
        self.files = self.bytes = 0

    def _refuse(self, member: tarfile.TarInfo, why: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self.field}: {member.name[:200]!r} {why}", field=self.field)

    def check(self, member: tarfile.TarInfo, dest: Path) -> tarfile.TarInfo:
        root = os.path.realpath(dest)
        if os.path.isabs(member.name) or ".." in Path(member.name).parts:
            raise self._refuse(member, "is not a relative path inside the archive")
        target = os.path.realpath(os.path.join(root, member.name))
        if os.path.commonpath([root, target]) != root:
            raise self._refuse(member, "leaves the archive's directory")
        if member.issym() or member.islnk():
            base = os.path.dirname(target) if member.issym() else root
            link = os.path.realpath(os.path.join(base, member.linkname))
            if os.path.isabs(member.linkname) or os.path.commonpath([root, link]) != root:
                raise self._refuse(member, "is a link to something outside the archive")
        elif member.isreg():
            self.files += 1
            self.bytes += member.size
            _check_caps(self.files, self.bytes, self.limits, self.field)
        elif not member.isdir():
            raise self._refuse(member, "is not a regular file, directory or link")
        member.mode = (member.mode or 0o644) & 0o755  # no set-uid/gid, no world-writable
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        return member


def _check_caps(count: int, total: int, limits: ArtifactLimits, field: str) -> None:
    if count > limits.max_files:
        raise InvalidArgumentError(
            f"the artifact holds more than {limits.max_files} files "
            "(RAYDECK_MODEL_ARTIFACT_MAX_FILES)",
            field=field,
        )
    if total > limits.max_bytes:
        raise InvalidArgumentError(
            f"the artifact is larger than {limits.max_bytes} bytes "
            "(RAYDECK_MODEL_ARTIFACT_MAX_BYTES)",
            field=field,
        )


def model_files(framework: str) -> tuple[str, ...]:
    return MODEL_FILES.get(framework, ())


def check_model_artifact(
    framework: str,
    directory: Path,
    limits: ArtifactLimits,
    *,
    field: str = "artifact_uri",
) -> None:
    """Refuse (400 naming ``field``) an artifact the framework's predictor could not use."""
    _check_tree(directory, limits, field)
    names = MODEL_FILES.get(framework)
    if names is None:
        raise InvalidArgumentError(f"unknown framework {framework!r}", field="framework")
    found = next((directory / n for n in names if (directory / n).is_file()), None)
    if found is None:
        present = sorted(p.name for p in directory.iterdir())[:10]
        raise InvalidArgumentError(
            f"a {framework} model needs one of {', '.join(names)} in its artifact directory "
            f"(found: {', '.join(present) or 'nothing'})",
            field=field,
        )
    if found.name in _PICKLE_CHECKS:
        _PICKLE_CHECKS[found.name](found, directory, limits, field, framework)
    else:
        _CHECKS.get(found.name, _check_nonempty)(found, directory, limits, field)


def _check_tree(root: Path, limits: ArtifactLimits, field: str) -> None:
    """Regular files and inside links only, within the count and size caps; no file is read."""
    base = os.path.realpath(root)
    count = total = 0
    for current, dirs, files in os.walk(root):  # never follows links to directories
        for name in [*dirs, *files]:
            path = Path(current) / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = os.path.realpath(path)
                if os.path.commonpath([base, target]) != base or not os.path.exists(target):
                    raise InvalidArgumentError(
                        f"{relative} is a link to something outside the artifact", field=field
                    )
            elif stat.S_ISREG(info.st_mode):
                count += 1
                total += info.st_size
            elif not stat.S_ISDIR(info.st_mode):
                raise InvalidArgumentError(
                    f"{relative} is not a regular file or directory", field=field
                )
        _check_caps(count, total, limits, field)


def _ends(path: Path, size: int = 16) -> tuple[bytes, bytes]:
    with path.open("rb") as handle:
        head = handle.read(size)
        handle.seek(max(path.stat().st_size - size, 0))
        return head, handle.read()


def _check_nonempty(path: Path, root: Path, limits: ArtifactLimits, field: str) -> None:
    if path.stat().st_size == 0:
        raise InvalidArgumentError(f"{path.name} is empty", field=field)


def _is_pickle(head: bytes, tail: bytes) -> bool:
    """A protocol 2+ pickle that ends with STOP: well formed at both ends, never parsed."""
    return head[:2] in _PICKLE_PROTOCOLS and tail.endswith(_PICKLE_STOP)


def first_global(head: bytes) -> str | None:
    """``module.name`` of the first class or function a pickle refers to (its top object's
    class, for a pickled model), read with ``pickletools``' opcode parser: a static reading of
    the bytes that resolves nothing, imports nothing and runs nothing. None if not found in
    ``head``."""
    strings: list[str] = []
    memo: dict[int, str | None] = {}  # memo index → the string memoized there (else None)
    pushed: str | None = None  # the string the previous opcode pushed
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(head)):
            name, string = opcode.name, None
            if name == "GLOBAL" and isinstance(arg, str):
                return arg.replace(" ", ".")
            if name == "STACK_GLOBAL":
                return ".".join(strings[-2:]) if len(strings) >= 2 else None
            if "UNICODE" in name and isinstance(arg, str):
                string = arg
                strings.append(arg)
            elif name == "MEMOIZE":
                memo[len(memo)], string = pushed, pushed
            elif name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int):
                memo[arg], string = pushed, pushed
            elif name in ("GET", "BINGET", "LONG_BINGET") and isinstance(arg, int):
                string = memo.get(arg)
                if string is not None:
                    strings.append(string)
            pushed = string
    except (ValueError, EOFError, OverflowError, MemoryError):  # cut off at ``head``'s end
        return None
    return None


def _check_pickled_model(path: Path, framework: str, head: bytes, field: str) -> None:
    """XGBoost and LightGBM predictors load only their library's objects from a pickle."""
    package = _PICKLED_PACKAGE.get(framework)
    found = first_global(head) if package is not None else None
    if package is None or found is None or found.split(".")[0] == package[0]:
        return
    raise InvalidArgumentError(f"{path.name} holds a {found}, not {package[1]} model", field=field)


def _check_pickle(
    path: Path, root: Path, limits: ArtifactLimits, field: str, framework: str = ""
) -> None:
    _check_nonempty(path, root, limits, field)
    head, tail = _ends(path)
    if not _is_pickle(head, tail):
        raise InvalidArgumentError(
            f"{path.name} is not a complete pickle (protocol 2 or later)", field=field
        )
    _check_pickled_model(path, framework, _head(path), field)


def _check_joblib(
    path: Path, root: Path, limits: ArtifactLimits, field: str, framework: str = ""
) -> None:
    _check_nonempty(path, root, limits, field)
    head, tail = _ends(path)
    if _is_pickle(head, tail):  # uncompressed: its first objects can be read as above
        _check_pickled_model(path, framework, _head(path), field)
    elif not head.startswith((*_JOBLIB_COMPRESSED, _JOBLIB_OLD_ZLIB)):
        raise InvalidArgumentError(
            f"{path.name} is not a joblib file (a pickle, or a compressed one)", field=field
        )


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_SCAN_BYTES)


def _check_xgboost(path: Path, root: Path, limits: ArtifactLimits, field: str) -> None:
    """model.json / model.ubj / model.bst: JSON or UBJSON objects (XGBoost 2+ formats)."""
    _check_nonempty(path, root, limits, field)
    head, tail = _ends(path)
    if path.suffix == ".json":
        if path.stat().st_size <= _JSON_PARSE_MAX_BYTES:
            try:
                document = json.loads(path.read_bytes())
            except ValueError as exc:
                raise InvalidArgumentError(
                    f"{path.name} is not valid JSON: {exc}", field=field
                ) from exc
            if not isinstance(document, dict) or "learner" not in document:
                raise InvalidArgumentError(
                    f"{path.name} is not an XGBoost model (no 'learner' object)", field=field
                )
            return
        if head.lstrip()[:1] == b"{" and tail.rstrip()[-1:] == b"}":
            return
    elif head[:1] == b"{":
        return
    raise InvalidArgumentError(
        f"{path.name} is not an XGBoost model saved as JSON or UBJSON", field=field
    )


def _check_lightgbm_text(path: Path, root: Path, limits: ArtifactLimits, field: str) -> None:
    with path.open("rb") as handle:
        first = handle.readline(64).strip()
    if first != b"tree":
        raise InvalidArgumentError(
            f"{path.name} is not a LightGBM model file (Booster.save_model)", field=field
        )


def _check_torch(path: Path, root: Path, limits: ArtifactLimits, field: str) -> None:
    """model.pt: a TorchScript zip (code/ inside); model.pth: torch.save's zip or a pickle.
    Only the zip's directory is read, never a member."""
    _check_nonempty(path, root, limits, field)
    head, tail = _ends(path)
    if head.startswith(_ZIP_MAGIC) and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InvalidArgumentError(
                f"{path.name} is not a readable archive", field=field
            ) from exc
        if path.suffix == ".pth" or any("/code/" in f"/{n}" for n in names):
            return
        raise InvalidArgumentError(
            f"{path.name} is not TorchScript (torch.jit.save); a whole module saved with "
            "torch.save goes in model.pth",
            field=field,
        )
    if path.suffix == ".pth" and _is_pickle(head, tail):
        return
    raise InvalidArgumentError(
        f"{path.name} is not a PyTorch file (TorchScript for model.pt, torch.save for model.pth)",
        field=field,
    )


def _check_custom(path: Path, root: Path, limits: ArtifactLimits, field: str) -> None:
    """The manifest names ``module:Class``; the module must parse and bind that name at its
    top level. Parsed with ``ast`` only: nothing of it runs here."""
    name = path.name
    if path.stat().st_size > limits.max_source_bytes:
        raise InvalidArgumentError(f"{name} is too large", field=field)
    try:
        config = json.loads(path.read_bytes())
    except ValueError as exc:
        raise InvalidArgumentError(f"{name}: not valid JSON ({exc})", field=field) from exc
    ref = config.get("class") if isinstance(config, dict) else None
    match = _CLASS_REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise InvalidArgumentError(
            f'{name}: needs {{"class": "module:ClassName"}}, e.g. "predictor:MyPredictor"',
            field=field,
        )
    module, class_name = match.groups()
    source = root.joinpath(*module.split(".")).with_suffix(".py")
    relative = source.relative_to(root).as_posix()
    if not source.is_file():
        raise InvalidArgumentError(
            f"{name}: module {module!r} needs {relative} in the artifact", field=field
        )
    if source.stat().st_size > limits.max_source_bytes:
        raise InvalidArgumentError(
            f"{relative} is larger than {limits.max_source_bytes} bytes "
            "(RAYDECK_MODEL_SOURCE_MAX_BYTES)",
            field=field,
        )
    try:
        tree = ast.parse(source.read_bytes(), filename=relative)
    except SyntaxError as exc:
        raise InvalidArgumentError(
            f"{relative}, line {exc.lineno}: {exc.msg}", field=field
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        raise InvalidArgumentError(f"{relative} is not Python source", field=field) from exc
    if class_name not in _top_level_names(tree):
        raise InvalidArgumentError(
            f"{name}: {relative} defines no class {class_name!r}", field=field
        )


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level: classes, assignments, imports."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):  # `try: import x except ImportError: ...`
            inner = ast.Module(body=[*node.body, *getattr(node, "orelse", [])], type_ignores=[])
            names |= _top_level_names(inner)
    return names


# By file name: every name above belongs to one format.
_CHECKS: dict[str, Callable[[Path, Path, ArtifactLimits, str], None]] = {
    "model.json": _check_xgboost,
    "model.ubj": _check_xgboost,
    "model.bst": _check_xgboost,
    "model.txt": _check_lightgbm_text,
    "model.pt": _check_torch,
    "model.pth": _check_torch,
    "raydeck_predictor.json": _check_custom,
}
_PICKLE_CHECKS: dict[str, Callable[[Path, Path, ArtifactLimits, str, str], None]] = {
    "model.pkl": _check_pickle,
    "model.joblib": _check_joblib,
}
