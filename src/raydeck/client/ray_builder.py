"""``ray.init("raydeck://<cluster>")``: a Ray ClientBuilder that resolves through Raydeck.

Ray maps the ``raydeck`` scheme to ``importlib.import_module("raydeck").ClientBuilder``
(see ``ray.client_builder._get_builder_from_address``); ``raydeck/__init__.py`` hands out
``RaydeckClientBuilder`` lazily. The builder asks the control plane for the cluster's Ray
Client address and Ray auth token, switches this process's Ray token auth to that token,
then connects like ``ray.init("ray://<address>")``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

# Missing from ray/_raylet.pyi but exported by the compiled module (Ray 2.60).
from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
from ray.client_builder import ClientBuilder, ClientContext

from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError

log = logging.getLogger(__name__)

__all__ = ["RaydeckClientBuilder", "Resolver", "configure_ray_token_auth", "resolve_cluster"]

Resolver = Callable[[str], tuple[str, str]]


def resolve_cluster(name: str) -> tuple[str, str]:
    """(Ray Client "host:port", Ray auth token) of cluster ``name``, from the Raydeck server."""
    # Imported here so `import raydeck` (done by Ray for every raydeck:// address) stays
    # light and this module can be exercised with a fake resolver alone.
    from raydeck.client.config import load_client_config
    from raydeck.client.http import ApiTransport

    config = load_client_config()
    api = ApiTransport(config.server, config.token)
    try:
        path = f"/api/v1/clusters/{quote(name, safe='')}"
        cluster: dict[str, Any] = api.request("GET", path)
        credentials: dict[str, Any] = api.request("GET", f"{path}/credentials")
    finally:
        api.close()
    address = cluster.get("ray_client_address") or credentials.get("ray_client_address")
    if not address:
        state = cluster.get("state", "unknown")
        raise FailedPreconditionError(
            f"cluster {name!r} has no Ray Client address yet (state {state})"
        )
    token = credentials.get("ray_auth_token") or ""
    return str(address), str(token)


def configure_ray_token_auth(token: str) -> None:
    """Make this process's Ray (and Ray Client) use ``token``.

    Ray reads RAY_AUTH_MODE/RAY_AUTH_TOKEN into its C++ RayConfig and token loader once
    (at ``import ray``) and caches both; setting the variables afterwards is ignored
    (verified: the Ray Client handshake then times out). ``Config.initialize("")``
    re-reads the environment and ``reset_cache()`` drops the cached token, the same
    sequence Ray's own ``authentication_test_utils.reset_auth_token_state`` uses. The
    Ray Client's gRPC interceptor then sends ``authorization: Bearer <token>``.
    """
    if token:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = token  # beats RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token
    else:  # cluster runs without Ray auth
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.pop("RAY_AUTH_TOKEN", None)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


CONNECT_ATTEMPTS = 3
_FLAKY_CLIENT_START = ("Initialization failure from server", "client server failed")


class RaydeckClientBuilder(ClientBuilder):
    """Builder Ray creates for ``raydeck://<cluster-name>`` addresses."""

    def __init__(self, address: str | None, resolve: Resolver | None = None) -> None:
        name = (address or "").strip().strip("/")
        if not name:
            raise InvalidArgumentError(
                "raydeck:// address needs a cluster name: ray.init('raydeck://<cluster>')",
                field="address",
            )
        # Looked up at call time so tests (and embedders) can swap the module function.
        resolver = resolve if resolve is not None else resolve_cluster
        ray_client_address, self._ray_auth_token = resolver(name)
        super().__init__(ray_client_address)
        self.cluster_name = name

    def connect(self) -> ClientContext:
        # Applied at connect time, not in __init__: building a builder has no side effects.
        configure_ray_token_auth(self._ray_auth_token)
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                context: ClientContext = super().connect()
                return context
            except ConnectionAbortedError as exc:
                # Ray Client's proxier sometimes loses the per-connection server it just
                # started (about 1 first connection in 10 here, with Ray's own proxy too):
                # "Initialization failure from server" / "Starting Ray client server failed".
                # A new attempt gets a fresh server; anything else surfaces unchanged.
                flaky = any(text in str(exc) for text in _FLAKY_CLIENT_START)
                if not flaky or attempt == CONNECT_ATTEMPTS - 1:
                    raise
                log.warning("Ray Client server start failed on %s; retrying", self.cluster_name)
                time.sleep(1.0)
        raise AssertionError("unreachable")
