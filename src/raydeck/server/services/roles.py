"""What each role may do. Permissions are ``<resource>.<verb>``; this is the one table.

Built-in roles, so new resources need no edit here:
- ``admin``: everything.
- ``user``: everything except the admin-only resources, and no writes to projects/budgets.
- ``viewer``: only the read verbs (get, list, logs, view), never on admin-only resources.
Custom roles are explicit permission lists; ``*`` matches any resource or verb.

Server-wide resources (``GLOBAL_RESOURCES``) are granted only by bindings on every project
("*"); all others are kept per project and granted by a binding in the request's project or
on "*".
"""

from __future__ import annotations

from collections.abc import Iterable

from raydeck.core.models import Role

__all__ = [
    "ADMIN_ONLY_RESOURCES",
    "ADMIN_WRITE_RESOURCES",
    "GLOBAL_RESOURCES",
    "NON_MUTATING_VERBS",
    "READ_VERBS",
    "SELF_RESOURCES",
    "builtin_allows",
    "builtin_permissions",
    "permission_matches",
    "role_allows",
]

READ_VERBS = frozenset({"get", "list", "logs", "view"})
# Calls that change nothing stored: never written to the audit log.
NON_MUTATING_VERBS = READ_VERBS | {"predict", "connect"}
ADMIN_ONLY_RESOURCES = frozenset({"tokens", "accounts", "roles", "role_bindings", "audit"})
# Hosts (machines of the `hosts` backend) are infrastructure: everyone may see them, only
# admins (or custom roles granting e.g. `hosts.create`) add, drain or remove them.
ADMIN_WRITE_RESOURCES = frozenset({"projects", "budgets", "hosts"})
GLOBAL_RESOURCES = ADMIN_ONLY_RESOURCES | {"projects", "hosts"}
# About the caller itself: any valid token may ask, with or without bindings.
SELF_RESOURCES = frozenset({"tokens_self"})
# Every other resource keeps its rows per project: the request's project scopes it.


def builtin_allows(role: Role, permission: str) -> bool:
    resource, _, verb = permission.partition(".")
    if role is Role.ADMIN:
        return True
    if resource in ADMIN_ONLY_RESOURCES:
        return False
    if resource in ADMIN_WRITE_RESOURCES and verb not in READ_VERBS:
        return False
    if role is Role.USER:
        return True
    return verb in READ_VERBS


def builtin_permissions(role: Role) -> list[str]:
    """A readable summary of a built-in role (for `raydeck roles list`)."""
    if role is Role.ADMIN:
        return ["*.*"]
    denied = sorted(ADMIN_ONLY_RESOURCES)
    if role is Role.USER:
        writes = [f"!{r}.<write>" for r in sorted(ADMIN_WRITE_RESOURCES)]
        return ["*.*", *(f"!{r}.*" for r in denied), *writes]
    return [f"*.{verb}" for verb in sorted(READ_VERBS)] + [f"!{r}.*" for r in denied]


def permission_matches(pattern: str, permission: str) -> bool:
    want_resource, _, want_verb = pattern.partition(".")
    resource, _, verb = permission.partition(".")
    return want_resource in ("*", resource) and want_verb in ("*", verb)


def role_allows(role: str | Role, permission: str, custom: Iterable[str] = ()) -> bool:
    """``custom`` is the permission list when ``role`` is a custom role."""
    if role in Role.__members__.values():
        return builtin_allows(Role(role), permission)
    return any(permission_matches(p, permission) for p in custom)
