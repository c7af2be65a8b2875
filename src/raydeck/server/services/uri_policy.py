"""Which paths and URLs a user may make the server open (issue 11, findings 2 and 7).

The server opens a path a user names only when, symlinks and ``..`` resolved, it lies inside
the project's own warehouse directory (``project_warehouse_dir``) or under a root an admin
allowlisted (``RAYDECK_ALLOWED_ROOTS``), and never anything of the server's own: the rest of
``RAYDECK_HOME``, the database, the secret key, the artifact store, other projects'
warehouse directories (nor a directory holding any of them). Other URIs (``s3://``,
``gs://``, ``memory://``, …) would be read with the server's own credentials: only under a
URI prefix in ``RAYDECK_ALLOWED_ROOTS``.

Network URLs the server connects to for users (http(s) artifacts, SQL databases, BigQuery
endpoints, object-store endpoints in storage options) must resolve to public addresses only,
every address of the name, unless ``RAYDECK_ALLOWED_PRIVATE_NETWORKS`` allows them; fetches
then go to the address that was checked, so a name that re-resolves (DNS rebinding) gets
nowhere else. Paths are checked when a request names them and again when the server opens
them. Refusals are 400 naming the field.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.warehouse import ConnectionKind, ResolvedConnection
from raydeck.core.settings import Settings

__all__ = [
    "MAX_FETCH_BYTES",
    "check_connection",
    "check_host",
    "check_local_path",
    "check_location",
    "fetch_url",
    "project_warehouse_dir",
]

MAX_FETCH_BYTES = 4 * 1024**3
FETCH_TIMEOUT_SECONDS = 60.0
MAX_REDIRECTS = 5
_NETWORK_SCHEMES = ("http", "https")
_ROOTS_HINT = "an admin can allow more roots with RAYDECK_ALLOWED_ROOTS"
_NETWORKS_HINT = "an admin can allow such addresses with RAYDECK_ALLOWED_PRIVATE_NETWORKS"


def project_warehouse_dir(settings: Settings, project: str) -> Path:
    """The project's own warehouse directory: its duckdb files and local files roots, and
    where relative connection paths go. ``default`` uses the warehouse root itself (minus
    ``projects/``), every other project ``<root>/projects/<project>``."""
    root = settings.warehouse_root
    return root if project == "default" else root / "projects" / project


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@dataclass(frozen=True)
class _Areas:
    own: Path
    others: tuple[Path, ...]  # other projects' directories, even inside ``own``
    server: tuple[Path, ...]  # the server's own files
    roots: tuple[Path, ...]  # admin-allowlisted local roots
    uri_roots: tuple[str, ...]  # admin-allowlisted URI prefixes


def _areas(settings: Settings, project: str) -> _Areas:
    warehouse = _real(settings.warehouse_root)
    server = [_real(settings.home), _real(settings.secret_key_path), warehouse]
    if settings.db_url.startswith("sqlite"):
        database = make_url(settings.db_url).database
        if database and database != ":memory:":
            server.append(_real(database))
    if _is_local(settings.artifact_root):
        server.append(_real(settings.artifact_root.removeprefix("file://")))
    allowed = _csv(settings.allowed_roots)
    return _Areas(
        own=_real(project_warehouse_dir(settings, project)),
        others=(warehouse / "projects",) if project == "default" else (),
        server=tuple(server),
        roots=tuple(_real(r.removeprefix("file://")) for r in allowed if _is_local(r)),
        uri_roots=tuple(r.rstrip("/") + "/" for r in allowed if not _is_local(r)),
    )


def _refusal(real: Path, areas: _Areas) -> str | None:
    """Why ``real`` (resolved) may not be opened, or None."""
    if any(_inside(real, o) or _inside(o, real) for o in areas.others):
        return "is (or holds) another project's warehouse directory"
    if _inside(real, areas.own):
        return None
    if any(_inside(real, s) or _inside(s, real) for s in areas.server):
        return "is (or holds) the server's own files (RAYDECK_HOME, its database, keys, artifacts)"
    if any(_inside(real, root) for root in areas.roots):
        return None
    return f"is outside the project's warehouse directory ({areas.own}); {_ROOTS_HINT}"


def check_local_path(settings: Settings, project: str, path: str, *, field: str) -> Path:
    """``path`` (absolute, or ``file://``) resolved, if the project may open it: 403 if not."""
    local = path.removeprefix("file://")
    if not Path(local).is_absolute():
        raise InvalidArgumentError(f"{field} {path!r} must be an absolute path", field=field)
    real = _real(local)
    reason = _refusal(real, _areas(settings, project))
    if reason is not None:
        shown = path if str(real) == local else f"{path} (= {real})"
        raise InvalidArgumentError(f"{field} {shown} {reason}", field=field)
    return real


def check_location(settings: Settings, project: str, uri: str, *, field: str) -> str:
    """A path or URI the server will read or write for the project: local paths come back
    resolved; http(s) must reach public addresses; other schemes need an allowlisted prefix."""
    if _is_local(uri):
        return str(check_local_path(settings, project, uri, field=field))
    scheme = uri.split("://", 1)[0].lower()
    if scheme in _NETWORK_SCHEMES:
        _check_url(settings, uri, field=field)
        return uri
    if any(
        uri.rstrip("/") + "/" == r or uri.startswith(r) for r in _areas(settings, project).uri_roots
    ):
        return uri
    raise InvalidArgumentError(
        f"{field} {uri!r}: {scheme}:// locations are opened with the server's own credentials, "
        "so only under a prefix an admin listed in RAYDECK_ALLOWED_ROOTS",
        field=field,
    )


# Network ----------------------------------------------------------------------------------


def _allowed_private(
    settings: Settings, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool:
    for entry in _csv(settings.allowed_private_networks):
        if entry == "*" or entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name that is not this one
    return False


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for name in ("loopback", "unspecified", "link_local", "private", "multicast", "reserved"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return None if address.is_global else "non-public"


def check_host(
    settings: Settings,
    host: str | None,
    port: int | None,
    *,
    field: str,
    must_resolve: bool = True,
) -> str:
    """Every address ``host`` resolves to must be public (or allowed); the first one, to
    connect to instead of the name. ``must_resolve=False`` (storing a connection that code
    on a cluster may reach by a name this server cannot resolve): "" for such a name; it is
    checked again when the server opens it."""
    if not host:
        raise InvalidArgumentError(f"{field} names no host", field=field)
    bare = host.strip("[]")
    try:
        addresses = [ipaddress.ip_address(bare)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(bare, port or 0, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            if not must_resolve:
                return ""
            raise InvalidArgumentError(
                f"{field}: cannot resolve host {host!r}: {exc}", field=field
            ) from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
    if not addresses:
        raise InvalidArgumentError(f"{field}: host {host!r} has no address", field=field)
    for address in addresses:
        kind = _kind(address)
        if kind is not None and not _allowed_private(settings, bare, address):
            raise InvalidArgumentError(
                f"{field}: host {host!r} is a {kind} address ({address}); {_NETWORKS_HINT}",
                field=field,
            )
    return str(addresses[0])


def _check_url(
    settings: Settings, url: str, *, field: str, must_resolve: bool = True
) -> tuple[str, str, int | None]:
    """(host, checked address, port) of an http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{field} {url!r} is not a valid URL: {exc}", field=field
        ) from exc
    if parts.scheme.lower() not in _NETWORK_SCHEMES or not parts.hostname:
        raise InvalidArgumentError(f"{field} {url!r} must be an http(s) URL", field=field)
    address = check_host(settings, parts.hostname, port, field=field, must_resolve=must_resolve)
    return parts.hostname, address, port


def fetch_url(
    settings: Settings, url: str, out: IO[bytes], *, field: str, max_bytes: int = MAX_FETCH_BYTES
) -> None:
    """GET ``url`` into ``out``, connecting only to the address checked (redirects checked
    again, at most ``MAX_REDIRECTS``); 4xx naming ``field`` for anything that goes wrong."""
    with httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            host, address, port = _check_url(settings, url, field=field)
            target = httpx.URL(url).copy_with(host=address)
            netloc = host if port is None else f"{host}:{port}"
            if ":" in host and port is None:
                netloc = f"[{host}]"
            try:
                with client.stream(
                    "GET",
                    target,
                    headers={"Host": netloc},
                    extensions={"sni_hostname": host},
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise InvalidArgumentError(
                            f"{field} {url!r} answered HTTP {response.status_code}", field=field
                        )
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise InvalidArgumentError(
                                f"{field} {url!r} is larger than {max_bytes} bytes", field=field
                            )
                        out.write(chunk)
                    return
            except httpx.HTTPError as exc:
                raise InvalidArgumentError(
                    f"cannot fetch {field} {url!r}: {exc}"[:500], field=field
                ) from exc
    raise InvalidArgumentError(f"{field} {url!r} redirects too often", field=field)


# Connections ------------------------------------------------------------------------------


def _addresses(host: str | None) -> set[str]:
    try:
        return {str(i[4][0]) for i in socket.getaddrinfo(host or "localhost", None)}
    except (OSError, UnicodeError):
        return {host or "localhost"}


def _same_database(a: URL, b: URL) -> bool:
    """Could ``a`` be the database ``b`` (the control plane's)? Ports count only when both
    URLs give one; hosts match by name or by any shared address."""
    if (a.get_backend_name(), a.database) != (b.get_backend_name(), b.database):
        return False
    if a.port is not None and b.port is not None and a.port != b.port:
        return False
    return a.host == b.host or bool(_addresses(a.host) & _addresses(b.host))


def _check_sql_url(settings: Settings, project: str, text: str, *, opening: bool) -> str:
    """The URL to connect to: file databases resolved and confined, hosts checked (and
    pinned for libpq drivers)."""
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise InvalidArgumentError(f"url is not a SQLAlchemy URL: {exc}", field="url") from exc
    backend = url.get_backend_name()
    if backend in ("sqlite", "duckdb"):
        database = url.database or ""
        if url.query.get("uri") or database.startswith("file:"):
            raise InvalidArgumentError(f"{backend} URI filenames are not accepted", field="url")
        if database in ("", ":memory:"):
            return text
        real = check_local_path(settings, project, database, field="url")
        return url.set(database=str(real)).render_as_string(hide_password=False)
    if _same_database(url, make_url(settings.db_url)):
        raise InvalidArgumentError("url is the control plane's own database", field="url")
    hosts = [url.host or "localhost"]  # no host: a local socket
    for key in ("host", "hostaddr"):
        value = url.query.get(key)
        hosts.extend(value if isinstance(value, tuple) else [value] if value else [])
    addresses = [
        check_host(
            settings,
            "localhost" if h.startswith("/") else h,
            url.port,
            field="url",
            must_resolve=opening,
        )
        for h in hosts
    ]
    pinnable = url.host and "hostaddr" not in url.query and "host" not in url.query
    libpq = url.get_driver_name() in ("psycopg", "psycopg2")
    if backend == "postgresql" and libpq and pinnable and addresses[0]:
        url = url.update_query_dict({"hostaddr": addresses[0]})
    return url.render_as_string(hide_password=False)


def _check_storage_options(settings: Settings, secret: str | None) -> None:
    """URLs inside fsspec storage options (``endpoint_url``, ``client_kwargs``…) are network
    endpoints the server would call."""
    if not secret:
        return
    try:
        options = json.loads(secret)
    except ValueError as exc:
        raise InvalidArgumentError(
            "secret must be storage options as JSON", field="secret"
        ) from exc

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and "://" in value:
            _check_url(settings, value, field="secret")

    walk(options)


def check_connection(
    settings: Settings, project: str, connection: ResolvedConnection, *, opening: bool = True
) -> ResolvedConnection:
    """The connection as the server may open it (paths resolved, hosts pinned); 4xx naming
    the field otherwise. Run when a connection is stored (``opening=False``: a host name the
    server cannot resolve is let through) and again on every server-side open."""
    kind = connection.kind
    if kind is ConnectionKind.DUCKDB and connection.path:
        real = check_local_path(settings, project, connection.path, field="path")
        return connection.model_copy(update={"path": str(real)})
    if kind is ConnectionKind.FILES and connection.root:
        if connection.secret is not None:
            _check_storage_options(settings, connection.secret.get_secret_value())
        root = check_location(settings, project, connection.root, field="root")
        return connection.model_copy(update={"root": root})
    if kind is ConnectionKind.SQL and connection.url:
        return connection.model_copy(
            update={"url": _check_sql_url(settings, project, connection.url, opening=opening)}
        )
    if kind is ConnectionKind.BIGQUERY and connection.api_endpoint:
        _check_url(settings, connection.api_endpoint, field="api_endpoint", must_resolve=opening)
    return connection
