"""A raw ``ray start --head`` (token auth on, loopback, its own ports and temp dir) for tests
that exercise our Ray-facing code without a Raydeck server in between."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["RawHead", "raw_head"]

MARKER_ENV = "RAYDECK_TEST_RAY_CLUSTER"
PORT_BLOCK = 48  # 9 fixed ports + a 32-port worker range
PORT_FLAGS = [
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
]


@dataclass(frozen=True)
class RawHead:
    dashboard_url: str
    ray_client_address: str
    token: str
    node_manager_port: int
    temp_dir: str
    marker: str


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port_block(size: int) -> int:
    # Below Linux's ephemeral range (32768+) so outgoing connections cannot take them, above
    # 23000-23999 (Ray Client's per-client servers) and the ranges live servers use (20000+).
    for _ in range(200):
        base = random.randrange(28000, 32000 - size)
        if all(_port_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free port block")


def _stop(marker: str, temp_dir: str) -> None:
    """Kill exactly this head's processes. Ray's agents rename themselves (setproctitle),
    which rewrites their cmdline and can blank their environ, so the working directory
    (``ray start`` runs in ``temp_dir``) is checked too."""
    mine: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if (
                temp_dir in " ".join(proc.info["cmdline"] or [])
                or proc.cwd().startswith(temp_dir)
                or proc.environ().get(MARKER_ENV) == marker
            ):
                mine.append(proc)
    for proc in mine:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(mine, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def raw_head(resources: dict[str, float] | None = None) -> Iterator[RawHead]:
    """A one-CPU head, stopped (only its own processes) on exit."""
    base = _free_port_block(PORT_BLOCK)
    temp_dir = tempfile.mkdtemp(prefix="rdk-t-")  # short: Ray's unix socket paths must fit
    token, marker = secrets.token_hex(16), secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYDECK_"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, MARKER_ENV: marker}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ports = dict(zip(PORT_FLAGS, range(base, base + len(PORT_FLAGS)), strict=True))
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head"]
    cmd += [f"{flag}={port}" for flag, port in ports.items()]
    cmd += [
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--num-cpus=1",
        "--disable-usage-stats",
        f"--min-worker-port={base + 16}",
        f"--max-worker-port={base + PORT_BLOCK - 1}",
    ]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    try:
        done = subprocess.run(
            cmd, env=env, cwd=temp_dir, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed: {done.stderr[-2000:]}")
        yield RawHead(
            dashboard_url=f"http://127.0.0.1:{ports['--dashboard-port']}",
            ray_client_address=f"127.0.0.1:{ports['--ray-client-server-port']}",
            token=token,
            node_manager_port=ports["--node-manager-port"],
            temp_dir=temp_dir,
            marker=marker,
        )
    finally:
        _stop(marker, temp_dir)
