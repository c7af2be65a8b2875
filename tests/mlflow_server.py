"""A real MLflow tracking server for tests, from a pinned ``mlflow`` in its own virtualenv.

MLflow is not a dependency of Raydeck (the server talks to it over REST), so the first test
that needs one installs it with pip into ``~/.cache/raydeck-test-mlflow/mlflow-<version>``
(RAYDECK_TEST_MLFLOW_CACHE moves it; ~2 minutes, ~850 MB, kept for later runs), then starts
``mlflow server`` on a free loopback port with a SQLite backend store. The test is skipped
only when the package index cannot be reached; any other install failure fails it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from raydeck.devtools import free_port

__all__ = ["MLFLOW_VERSION", "mlflow_venv", "running_mlflow"]

MLFLOW_VERSION = "3.17.2"
INSTALL_TIMEOUT_SECONDS = 1200
START_TIMEOUT_SECONDS = 240
# what pip prints when it cannot reach the index at all (as opposed to a broken install)
_OFFLINE_MARKERS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectTimeoutError",
    "ProxyError",
)


def _cache_root() -> Path:
    configured = os.environ.get("RAYDECK_TEST_MLFLOW_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "raydeck-test-mlflow"


def mlflow_venv() -> Path:
    """The virtualenv holding ``mlflow==MLFLOW_VERSION``, installed on first use (one
    installer at a time across processes; a half-made one is removed and made again)."""
    root = _cache_root()
    target = root / f"mlflow-{MLFLOW_VERSION}"
    ready = target / ".raydeck-ready"
    if ready.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
        result = subprocess.run(
            [
                str(target / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"mlflow=={MLFLOW_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
        )
        if result.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            output = (result.stdout + result.stderr).strip()
            last = output.splitlines()[-1] if output else f"exit {result.returncode}"
            if any(marker in output for marker in _OFFLINE_MARKERS):
                pytest.skip(f"the package index is unreachable, cannot install mlflow: {last}")
            pytest.fail(f"pip install mlflow=={MLFLOW_VERSION} failed: {output[-3000:]}")
        ready.touch()
    return target


@contextmanager
def running_mlflow(workdir: Path) -> Iterator[str]:
    """``mlflow server`` (one worker, SQLite store under ``workdir``); yields its base URL."""
    venv = mlflow_venv()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log_path = workdir / "mlflow-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{workdir / 'mlflow.db'}",
                "--default-artifact-root",
                str(workdir / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its workers are stopped with it, by process group
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server exited with {process.returncode}: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server not up after {START_TIMEOUT_SECONDS} s: {tail}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
