"""Start, stop, kill -9 and restart a real ``raydeck server`` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A ``raydeck server`` on 127.0.0.1 (or ``host``) with its own RAYDECK_HOME."""

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ):
        self.home = home
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.env = {**os.environ, "RAYDECK_HOME": str(home), "RAYDECK_HOST": host, **(env or {})}
        self.env.pop("RAYDECK_SERVER", None)
        self.env.pop("RAYDECK_TOKEN", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "server.log"

    @property
    def token(self) -> str:
        token: str = json.loads((self.home / "credentials").read_text())["token"]
        return token

    def client_env(self) -> dict[str, str]:
        """Environment for a client process (SDK, CLI, ray.init) talking to this server."""
        return {**self.env, "RAYDECK_SERVER": self.url, "RAYDECK_TOKEN": self.token}

    def start(self, timeout: float = 60.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "raydeck.cli.main", "server", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signals reach the server alone, never Ray
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"raydeck server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"raydeck server did not become healthy: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
