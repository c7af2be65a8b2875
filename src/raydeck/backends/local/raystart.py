"""Building and running one ``ray start`` for one node."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from raydeck.backends.base import BackendError, PoolSpec
from raydeck.backends.local.ports import NodePorts
from raydeck.backends.local.processes import CLUSTER_ENV, NODE_ENV
from raydeck.backends.os_user import OsUser, demoted_env, private_dir

__all__ = [
    "CLIENT_SERVER_LOG",
    "NodeLaunch",
    "check_resources",
    "host_port",
    "log_tail",
    "run_ray_start",
    "start_client_server",
    "start_ray_process",
]

START_LOG = "raydeck-start.log"
_START_TIMEOUT_SECONDS = 180.0
# Inherited settings that would point `ray start` at another cluster or another token.
_DROPPED_ENV = ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_OVERRIDE_RESOURCES")
# Serve's throughput mode (Ray ≥ 2.55): gRPC between deployments (our router → model hop),
# request handling on the replica's own loop, buffered request logs. Its direct ingress stays
# off: it would open a port per ingress replica in 30000-31000, inside our port slots.
# A cluster's spec env can override any of these.
SERVE_TUNING_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}
# Ray refuses these as custom resources; they have their own flags.
_RESERVED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
_NODE_IP_LINE = re.compile(r"Local node IP:\s*(\S+)")


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Ray's processes start through launcher.py (see there why) in the server's own interpreter,
# so the cluster runs the server's Ray. It is passed with -c: run as a file, its directory
# would shadow top-level modules of the child.
_LAUNCHER = (Path(__file__).parent / "launcher.py").read_text()
_GCS_WAIT_SECONDS = 120.0
CLIENT_SERVER_LOG = "raydeck-client-server.log"


@dataclass(frozen=True)
class NodeLaunch:
    cluster_id: str
    node: str
    pool: PoolSpec
    ports: NodePorts
    temp_dir: Path
    bind_host: str
    auth_token: str
    extra_env: Mapping[str, str]
    gcs_port: int  # the head's GCS port; the node's own when it is the head
    run_as: OsUser | None = None  # None: the server's own OS user
    home: Path | None = None  # HOME of the Ray processes when run_as is set
    gcs_host: str | None = None  # the head's IP when it is on another host (else bind_host)

    @property
    def is_head(self) -> bool:
        return self.node == "head"

    def argv(self) -> list[str]:
        p = self.ports
        gcs = "" if self.is_head else host_port(self.gcs_host or self.bind_host, self.gcs_port)
        args = [
            sys.executable,
            "-c",
            _LAUNCHER,
            "start",
            gcs,
            str(_GCS_WAIT_SECONDS),
            f"--node-ip-address={self.bind_host}",
            f"--node-manager-port={p.node_manager}",
            f"--object-manager-port={p.object_manager}",
            f"--dashboard-agent-listen-port={p.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={p.dashboard_agent_grpc}",
            f"--metrics-export-port={p.metrics_export}",
            f"--runtime-env-agent-port={p.runtime_env_agent}",
            f"--min-worker-port={p.min_worker}",
            f"--max-worker-port={p.max_worker}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--log-style=record",
            "--log-color=false",
        ]
        if self.is_head:
            args += [
                "--head",
                f"--port={p.gcs}",
                "--include-dashboard=true",
                f"--dashboard-host={self.bind_host}",
                f"--dashboard-port={p.dashboard}",
                # Not started by Ray (see launcher.py), but Ray checks the port is free.
                f"--ray-client-server-port={p.ray_client}",
            ]
        else:
            args.append(f"--address={gcs}")
        args += self._resource_args()
        return args

    def _resource_args(self) -> list[str]:
        pool = self.pool
        check_resources(pool)
        args = [f"--num-cpus={int(pool.num_cpus)}", f"--num-gpus={int(pool.num_gpus)}"]
        if pool.memory is not None:
            # Hidden in `ray start --help` but supported: sets the node's `memory` resource.
            args.append(f"--memory={int(pool.memory)}")
        if pool.resources:
            args.append(f"--resources={json.dumps(pool.resources)}")
        return args

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        if self.run_as is not None:  # explicit: none of the server's secrets
            env = demoted_env(env, self.run_as, self.home or self.temp_dir)
        # `python`/`ray` in job entrypoints must be the cluster's interpreter, whatever PATH
        # the server was started with (an explicit PATH in the spec's env still wins).
        path = env.get("PATH", os.defpath)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
        env.update(SERVE_TUNING_ENV)
        env.update(self.extra_env)
        env.update(
            {
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.auth_token,
                "RAY_USAGE_STATS_ENABLED": "0",
                CLUSTER_ENV: self.cluster_id,
                NODE_ENV: self.node,
            }
        )
        if self.is_head:  # Ray's fixed defaults would collide between clusters on one host
            env["AUTOSCALER_METRIC_PORT"] = str(self.ports.autoscaler_metrics)
            env["DASHBOARD_METRIC_PORT"] = str(self.ports.dashboard_metrics)
        return env


def check_resources(pool: PoolSpec) -> None:
    """Reject what `ray start` cannot express, before any process is started."""
    reserved = _RESERVED_RESOURCES.intersection(pool.resources)
    if reserved:
        raise BackendError(
            f"pool {pool.name!r}: {sorted(reserved)} cannot be custom resources; "
            "use num_cpus, num_gpus or memory"
        )
    quantities = {"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus, **pool.resources}
    fractional = sorted(k for k, v in quantities.items() if not float(v).is_integer())
    if fractional:
        # Ray 2.60 rejects fractional node resources ("must all be whole numbers").
        raise BackendError(
            f"pool {pool.name!r}: Ray nodes take whole resource quantities only, not "
            + ", ".join(f"{k}={quantities[k]}" for k in fractional)
        )


def start_ray_process(launch: NodeLaunch) -> subprocess.Popen[bytes]:
    """Spawn ``ray start`` without waiting for it (a worker's waits for the head's GCS)."""
    private_dir(launch.temp_dir, launch.run_as)
    return _spawn(launch.argv(), launch.env(), launch.temp_dir, START_LOG, launch.run_as)


def start_client_server(head: NodeLaunch) -> subprocess.Popen[bytes]:
    """Spawn the head's Ray Client proxy; it waits for the head to register, then listens."""
    p = head.ports
    argv = [
        sys.executable,
        "-c",
        _LAUNCHER,
        "client-server",
        host_port(head.bind_host, p.gcs),
        str(_GCS_WAIT_SECONDS),
        str(p.client_servers.start),
        str(p.client_servers.stop - 1),
        str(p.runtime_env_agent),
        head.bind_host,
        f"--address={host_port(head.bind_host, p.gcs)}",
        f"--host={head.bind_host}",
        f"--port={p.ray_client}",
        "--mode=proxy",
    ]
    return _spawn(argv, head.env(), head.temp_dir, CLIENT_SERVER_LOG, head.run_as)


def _spawn(
    argv: list[str], env: dict[str, str], cwd: Path, log_name: str, run_as: OsUser | None
) -> subprocess.Popen[bytes]:
    # A file, not a pipe: a daemon that kept the pipe open would block reading it forever.
    with (cwd / log_name).open("ab") as log:
        try:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own session: see processes.py
                **(run_as.popen_kwargs() if run_as is not None else {}),
            )
        except OSError as exc:
            raise BackendError(f"cannot run {argv[0]}: {exc}") from exc


def log_tail(path: Path) -> str:
    return _tail(_read_log(path))


def run_ray_start(launch: NodeLaunch, process: subprocess.Popen[bytes] | None = None) -> str:
    """Run (or finish) ``ray start``; returns the IP Ray registered the node under."""
    process = process or start_ray_process(launch)
    try:
        rc = process.wait(timeout=_START_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        rc = None
    output = _read_log(launch.temp_dir / START_LOG)
    if rc != 0:
        outcome = "timed out" if rc is None else f"exited with {rc}"
        tail = _tail(output)
        reason = _last_error_line(tail) or "no output"
        raise BackendError(
            f"ray start for node {launch.node!r} of cluster {launch.cluster_id} {outcome}: "
            f"{reason}",
            log_tail=tail,
            log_file=str(launch.temp_dir / START_LOG),
        )
    match = _NODE_IP_LINE.search(output)
    return match.group(1) if match else launch.bind_host


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _last_error_line(tail: str) -> str:
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("Error", "error", "Exception", "failed", "Failed")):
            return line[:300]
    return lines[-1][:300] if lines else ""
