"""Starts one Ray process for the local backend; run as ``python -c <this file> ...``.

``start <gcs|""> <wait_s> <ray start args...>``
    ``ray start``, but without the console script's imports of the serve, jobs and state
    sub-commands it never uses (~1.5 CPU-s of a node's ~4 on a 2-core host). A worker's
    ``ray start`` needs the head node registered and polls for it only every 2 s; waiting here
    instead (polling faster) lets a worker import while the head is still starting.

``client-server <gcs> <wait_s> <first_port> <last_port> <agent_port> <bind_host> <args...>``
    The head's Ray Client proxy, in place of the one ``ray start --head`` would run. Ray's
    hands every client a server port from a fixed 23000-24000 range, so clusters on one host
    race for the same ports (and a client fails to connect); this one uses the range given.

Runs in the cluster's interpreter, not the server: standard library and Ray only.
"""

from __future__ import annotations

import socket
import sys
import time

_UNUSED_CLI_MODULES = (
    "ray.serve.scripts",
    "ray.dashboard.modules.job.cli",
    "ray.util.state.state_cli",
)


def _gcs_listening(host: str, port: int, deadline: float) -> bool:
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def _head_registered(gcs: str, deadline: float) -> bool:
    """Whether the head node registered before ``deadline``; raises if Ray's internal API
    moved."""
    host, _, port = gcs.rpartition(":")
    # GcsClient blocks for 40 s on a GCS that is not listening yet, so check that first.
    if not _gcs_listening(host.strip("[]"), int(port), deadline):
        return False
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.core.generated.gcs_pb2 import GcsNodeInfo  # type: ignore[attr-defined]

    client = GcsClient(address=gcs)
    while time.monotonic() < deadline:
        for node in client.get_all_node_info(timeout=5).values():
            if node.is_head_node and node.state == GcsNodeInfo.ALIVE:
                return True
        time.sleep(0.2)
    return False


def _ray_start(gcs: str, wait: float, args: list[str]) -> None:
    for name in _UNUSED_CLI_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # the CLI skips what fails to import
    from ray.scripts.scripts import main

    if gcs:
        try:
            registered = _head_registered(gcs, time.monotonic() + wait)
        except Exception:
            registered = True  # an internal API changed: leave the waiting to `ray start`
        if not registered:
            sys.exit(f"Error: the head node at {gcs} did not register within {wait:.0f}s")
    if "--head" in args:
        # `ray start` cannot be told not to run Ray Client's proxy; ours replaces it.
        from ray._private.node import Node

        Node.start_ray_client_server = lambda self: None  # type: ignore[method-assign]
    sys.argv = ["ray", "start", *args]
    sys.exit(main())  # type: ignore[no-untyped-call]


def _client_server(gcs: str, wait: float, args: list[str]) -> None:
    first, last, agent_port, bind_host, *server_args = args
    import ray.util.client.server.proxier as proxier
    from ray._private.services import resolve_ip_for_localhost
    from ray.util.client.server.server import main

    proxier.MIN_SPECIFIC_SERVER_PORT = int(first)
    proxier.MAX_SPECIFIC_SERVER_PORT = int(last) + 1  # exclusive
    host, _, port = gcs.rpartition(":")
    if not _gcs_listening(host.strip("[]"), int(port), time.monotonic() + wait):
        sys.exit(f"Error: the head's GCS at {gcs} did not answer within {wait:.0f}s")
    # The runtime env agent listens on the IP `ray start --node-ip-address` resolved to. (No
    # GcsClient here: its threads would make the proxy's forks of per-client servers riskier.)
    agent = f"http://{resolve_ip_for_localhost(bind_host)}:{agent_port}"
    sys.argv = ["ray-client-server", *server_args, f"--runtime-env-agent-address={agent}"]
    main()  # type: ignore[no-untyped-call]


def _run() -> None:
    command, gcs, wait, *args = sys.argv[1:]
    if command == "start":
        _ray_start(gcs, float(wait), args)
    elif command == "client-server":
        _client_server(gcs, float(wait), args)
    else:
        sys.exit(f"Error: unknown launcher command {command!r}")


if __name__ == "__main__":
    _run()
