"""Caps on every count, size and resource a request can ask for.

Each cap is a setting (``RAYDECK_MAX_*``, see ``core/settings.py``) read when a request is
validated, so an admin can raise or lower it without a code change. A value over its cap is
a validation error naming the field (a 400 from the server, a ``ValueError`` in the SDK).

Caps guard requests, not what is already stored: code that re-reads a stored row validates
inside ``stored_data()``, so lowering a cap never makes an existing row unreadable (or
undeletable).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from raydeck.core.settings import get_settings

__all__ = ["Cpus", "Gpus", "LabelMap", "ResourceMap", "cap_value", "capped", "stored_data"]

_UNCHECKED: ContextVar[bool] = ContextVar("raydeck_caps_unchecked", default=False)


@contextmanager
def stored_data() -> Iterator[None]:
    """Validate stored rows without the request caps (they were checked when written)."""
    token = _UNCHECKED.set(True)
    try:
        yield
    finally:
        _UNCHECKED.reset(token)


def cap_value(setting: str) -> Any:
    return getattr(get_settings(), setting)


def capped(setting: str) -> AfterValidator:
    """A number at most, or a list/dict with at most, ``Settings.<setting>``."""
    env = f"RAYDECK_{setting.upper()}"

    def check(value: Any) -> Any:
        if value is None or _UNCHECKED.get():
            return value
        cap = cap_value(setting)
        if isinstance(value, Sized) and not isinstance(value, str):
            if len(value) > cap:
                raise ValueError(f"at most {cap} items allowed ({env}), got {len(value)}")
        elif value > cap:
            raise ValueError(f"must be at most {cap} ({env})")
        return value

    return AfterValidator(check)


# Labels on every resource: short keys and values, and not too many of them.
LabelMap = Annotated[
    dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=63)]],
    capped("max_labels"),
]

# What one node (or one replica of an endpoint, job or batch prediction) may reserve.
Cpus = Annotated[float, Field(ge=0), capped("max_node_cpus")]
Gpus = Annotated[float, Field(ge=0), capped("max_node_gpus")]
ResourceMap = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=64)],
        Annotated[float, Field(ge=0), capped("max_resource_quantity")],
    ],
    capped("max_custom_resources"),
]
