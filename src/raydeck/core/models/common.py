"""Base classes: strict inputs, lenient stored/peer data, and pages."""

from __future__ import annotations

import re
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["NAME_PATTERN", "LenientModel", "Name", "Page", "StrictModel", "parse_memory"]

NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lowercase letters, digits, '-'")]

T = TypeVar("T")


class StrictModel(BaseModel):
    """Request bodies: unknown fields and type coercions are errors."""

    model_config = ConfigDict(extra="forbid", strict=False)


class LenientModel(BaseModel):
    """Stored or peer data: new fields from newer servers are ignored."""

    model_config = ConfigDict(extra="ignore")


class Page(LenientModel, Generic[T]):
    items: list[T]
    next_page_token: str | None = None


_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
}


def parse_memory(value: int | str) -> int:
    """Bytes from ``2147483648``, ``"2Gi"``, ``"512MiB"``; raises ValueError otherwise."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not match or match.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(f"not a memory size: {value!r} (use bytes or e.g. '2Gi', '512Mi')")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
