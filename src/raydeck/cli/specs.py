"""Reading what commands take besides flags: YAML/JSON spec files and KEY=VALUE pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

__all__ = ["load_spec_file", "parse_pairs"]


def load_spec_file(path: Path, option: str = "FILE") -> dict[str, Any]:
    """A YAML or JSON mapping (JSON is YAML); errors name the file, on one line."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        problem = f"cannot read {path}: {exc.strerror or exc}"
        raise typer.BadParameter(problem, param_hint=option) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = f"{path} is not valid YAML/JSON{at}"
        raise typer.BadParameter(problem, param_hint=option) from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a mapping of fields", param_hint=option)
    resolved: dict[str, Any] = _absolute_paths(data, path.resolve().parent)
    return resolved


# Fields naming local paths, which the server wants absolute: relative ones in a spec file
# are relative to that file (like docker-compose), so a spec travels with its code.
_PATH_FIELDS = frozenset({"package_dir", "working_dir", "base_output_dir"})


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def _absolute_paths(data: Any, base: Path) -> Any:
    if isinstance(data, list):
        return [_absolute_paths(item, base) for item in data]
    if not isinstance(data, dict):
        return data
    result = {}
    for key, value in data.items():
        if key in _PATH_FIELDS:
            result[key] = _absolute(value, base)
        elif key == "script" and isinstance(value, dict) and "path" in value:
            result[key] = {**value, "path": _absolute(value["path"], base)}
        else:
            result[key] = _absolute_paths(value, base)
    return result


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs[key] = value
    return pairs
