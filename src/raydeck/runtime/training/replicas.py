"""One replica's process: started with its env, output to its log file, metrics forwarded.

The process gets its own session and dies with its runner (``PR_SET_PDEATHSIG``), so
stopping a Ray job or cancelling a trial never leaves training processes behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from raydeck.runtime.training.control_plane import ControlPlane
from raydeck.runtime.training.reporting import parse_metric_line

__all__ = ["ReplicaLaunch", "ReplicaProcess", "ReplicaResult", "free_port", "node_ip"]

POLL_SECONDS = 0.1


def node_ip() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    except Exception:
        return "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class ReplicaLaunch:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    log_path: str
    report_path: str | None = None
    echo: bool = False  # copy output to our stdout too (the chief: Ray job logs)


@dataclass
class ReplicaResult:
    name: str
    exit_code: int | None
    stopped: bool = False  # by the tuner (pruned) or by a stop request
    message: str | None = None
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.stopped


class ReplicaProcess:
    def __init__(self, launch: ReplicaLaunch) -> None:
        self.launch = launch
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._seen: set[str] = set()
        self._pending: list[dict[str, Any]] = []
        self._tail: list[str] = []
        self._control = ControlPlane() if launch.report_path else None

    def stop(self, reason: str = "stopped") -> None:
        self._stop_reason = reason
        self._stop.set()

    def run(self) -> ReplicaResult:
        launch = self.launch
        os.makedirs(os.path.dirname(launch.log_path), exist_ok=True)
        env = {**os.environ, **launch.env}
        metric_file = env.get("CLOUD_ML_HP_METRIC_FILE")
        if metric_file:
            os.makedirs(os.path.dirname(metric_file), exist_ok=True)
        with open(launch.log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    launch.argv,
                    env=env,
                    cwd=launch.cwd or None,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                problem = f"{launch.name} could not start {launch.argv[0]!r}: {exc.strerror or exc}"
                log.write((problem + "\n").encode())
                return ReplicaResult(launch.name, None, message=problem)
            assert proc.stdout is not None
            pump = threading.Thread(target=self._pump, args=(proc.stdout, log), daemon=True)
            pump.start()
            try:
                stopped = self._watch(proc, metric_file)
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
                pump.join(timeout=5)
                self._forward(metric_file, final=True)
                if self._control is not None:
                    self._control.close()
        code = proc.returncode
        message = None
        if stopped:
            message = f"{launch.name} {self._stop_reason or 'stopped'}"
        elif code != 0:
            last = next((t for t in reversed(self._tail) if t.strip()), "")
            message = f"{launch.name} exited with code {code}" + (f": {last}" if last else "")
        return ReplicaResult(launch.name, code, stopped, message, list(self._tail[-20:]))

    def _watch(self, proc: subprocess.Popen[bytes], metric_file: str | None) -> bool:
        next_forward = 0.0
        while proc.poll() is None:
            if self._stop.wait(POLL_SECONDS):
                _kill_group(proc)
                return True
            now = time.monotonic()
            if now >= next_forward:
                next_forward = now + 0.5
                if self._forward(metric_file):
                    self.stop("stopped early by the tuner")
        return False

    def _pump(self, stream: IO[bytes], log: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            text = raw.decode(errors="replace").rstrip("\n")
            self._tail = [*self._tail[-49:], text]
            if self.launch.echo:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()

    def _forward(self, metric_file: str | None, *, final: bool = False) -> bool:
        """Send new metric points; True when the control plane says the run should stop."""
        if not metric_file or self._control is None or not self.launch.report_path:
            return False
        try:
            with open(metric_file, encoding="utf-8") as source:
                lines = source.read().splitlines()
        except OSError:
            lines = []
        for line in lines:  # hypertune rewrites the whole file: lines, not offsets, are new
            if line.strip() and line not in self._seen:
                self._seen.add(line)
                for point in parse_metric_line(line):
                    stamp = point.pop("timestamp", None)
                    if isinstance(stamp, int | float):
                        point["time"] = datetime.fromtimestamp(stamp, UTC).isoformat()
                    self._pending.append(point)
        if not self._pending:
            return False
        try:
            answer = self._control.call(
                "POST",
                self.launch.report_path,
                {"points": self._pending},
                patience=600 if final else 2,
            )
        except Exception:
            return False  # kept in _pending; sent with the next batch
        self._pending = []
        return bool(answer.get("should_stop"))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
