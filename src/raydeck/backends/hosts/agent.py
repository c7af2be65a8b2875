"""The host agent that ``raydeck node join`` runs: outbound-only, restart-safe.

Every ``poll_seconds`` it POSTs what it runs to the control plane it joined (its own
credential as bearer) and gets back the nodes it should run. It starts what is missing, stops
what is no longer wanted, and only ever runs `ray start` for nodes the server names: it has
no listening port and no way to run anything else. Its state file (``agent.json`` in its data
dir, mode 600) holds the server URL, its credential and the nodes it started; a restarted
agent reads it, finds those nodes' processes by their markers and never starts a second copy.
A lock file keeps two agents off one data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from raydeck.backends.base import BackendError
from raydeck.backends.hosts.node_runner import NodeRunner, RunningNode
from raydeck.core.errors import RaydeckError, UnauthenticatedError, error_from_payload
from raydeck.core.models.hosts import (
    AgentDesired,
    AgentLogChunk,
    AgentLogPositions,
    AgentLogs,
    AgentNodeReport,
    AgentSync,
    HostNodeState,
    NodeAssignment,
)

__all__ = ["AgentState", "HostAgent", "agent_lock"]

log = logging.getLogger(__name__)

STATE_FILE = "agent.json"
LOCK_FILE = "agent.lock"
LOG_SECONDS = 2.0
# Ray's own daemons' logs worth shipping (job output reaches the server via the Jobs API).
_SHIPPED_LOGS = ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err")
_CHUNK_BYTES = 256 * 1024
_SHIP_BYTES = 1024 * 1024  # per pass: a chatty node cannot hold the others back


@dataclass
class AgentState:
    server: str
    host_id: str
    host_name: str
    credential: str
    address: str
    ca_file: str | None = None
    nodes: dict[str, RunningNode] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> AgentState | None:
        path = data_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        nodes = {n["id"]: RunningNode(**n) for n in data.pop("nodes", [])}
        return cls(**data, nodes=nodes)

    def save(self, data_dir: Path) -> None:
        data: dict[str, Any] = asdict(self)
        data["nodes"] = [asdict(n) for n in self.nodes.values()]
        tmp = data_dir / f".{STATE_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, data_dir / STATE_FILE)


@contextlib.contextmanager
def agent_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive for the agent's lifetime: a second agent on the same data dir is refused."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (data_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackendError(
                f"another agent is already running with data dir {data_dir}", retryable=False
            ) from None
        yield


class HostAgent:
    def __init__(
        self,
        data_dir: Path,
        state: AgentState,
        *,
        transport: httpx.BaseTransport | None = None,
        max_parallel_starts: int = 4,
    ) -> None:
        self.data_dir = data_dir
        self.state = state
        self.runner = NodeRunner(data_dir, state.address)
        verify: str | bool = state.ca_file or True
        self.http = httpx.Client(
            base_url=state.server,
            headers={"Authorization": f"Bearer {state.credential}"},
            timeout=30.0,
            verify=verify,
            transport=transport,
            trust_env=False,  # only ever the control plane it joined
        )
        self._pool = ThreadPoolExecutor(max_workers=max_parallel_starts)
        self._starting: dict[str, Future[str]] = {}
        self._stopping: dict[str, Future[None]] = {}
        self._failed: dict[str, str] = {}
        self._checked_client_server: set[str] = set()
        self._lock = threading.Lock()
        self._log_positions: dict[str, int] | None = None
        self._next_logs = 0.0
        self.stop_event = threading.Event()

    # -- main loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Until ``stop_event`` is set, or the server no longer knows this host."""
        poll = 1.0
        try:
            while not self.stop_event.is_set():
                try:
                    desired = self.sync_once()
                    poll = desired.poll_seconds
                    if time.monotonic() >= self._next_logs:
                        self._next_logs = time.monotonic() + LOG_SECONDS
                        self.ship_logs()
                except UnauthenticatedError:
                    log.error("the control plane refused this host's credential: stopping")
                    self.stop_all()
                    raise
                except (RaydeckError, httpx.HTTPError, ValueError) as exc:
                    # The server being away is no reason to touch running nodes.
                    log.warning("sync with %s failed: %s", self.state.server, exc)
                self.stop_event.wait(max(0.1, min(poll, 30.0)))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.http.close()

    def sync_once(self) -> AgentDesired:
        body = AgentSync(nodes=self.observe()).model_dump(mode="json")
        desired = AgentDesired.model_validate(self._post("/api/v1/agent/sync", body))
        self.reconcile(desired.nodes)
        return desired

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        if not response.is_success:
            try:
                payload = response.json().get("error", {})
            except ValueError:
                payload = {"message": response.text[:300]}
            raise error_from_payload(payload, response.status_code)
        return response.json()

    # -- logs -------------------------------------------------------------------------------

    def ship_logs(self) -> None:
        """Send new whole lines of the nodes' Ray log files, from where the server has them."""
        if self._log_positions is None:  # a (re)started agent asks where to resume first
            self._log_positions = self._send_logs([])
        with self._lock:
            records = [
                r
                for r in self.state.nodes.values()
                if r.id not in self._starting and r.id not in self._stopping
            ]
        chunks: list[AgentLogChunk] = []
        budget = _SHIP_BYTES
        for record in records:
            log_dir = Path(record.temp_dir) / "session_latest" / "logs"
            paths = [log_dir / name for name in _SHIPPED_LOGS]
            paths += sorted((log_dir / "serve").glob("replica_*.log"))
            for path in paths:
                if budget <= 0 or len(chunks) >= 64:
                    break
                chunk = self._read_chunk(record.id, log_dir, path, min(budget, _CHUNK_BYTES))
                if chunk is not None:
                    chunks.append(chunk)
                    budget -= chunk.size
        if chunks:
            self._log_positions = self._send_logs(chunks)

    def _read_chunk(
        self, node_id: str, log_dir: Path, path: Path, limit: int
    ) -> AgentLogChunk | None:
        relative = str(path.relative_to(log_dir))
        assert self._log_positions is not None
        position = self._log_positions.get(f"{node_id}/{relative}", 0)
        try:
            size = path.stat().st_size
            if size < position:  # truncated or rotated: it starts over, and so do we
                position = 0
            if size == position:
                return None
            with path.open("rb") as handle:
                handle.seek(position)
                data = handle.read(limit)
        except OSError:
            return None
        end = data.rfind(b"\n") + 1
        if end == 0:
            return None  # no whole line yet
        text = data[:end].decode("utf-8", errors="replace")
        return AgentLogChunk(node_id=node_id, file=relative, offset=position, size=end, text=text)

    def _send_logs(self, chunks: list[AgentLogChunk]) -> dict[str, int]:
        body = AgentLogs(chunks=chunks).model_dump(mode="json")
        return AgentLogPositions.model_validate(self._post("/api/v1/agent/logs", body)).positions

    # -- observe / reconcile ----------------------------------------------------------------

    def observe(self) -> list[AgentNodeReport]:
        reports = []
        with self._lock:
            nodes = list(self.state.nodes.values())
        alive = self.runner.alive_many(nodes) if nodes else {}
        for record in nodes:
            if record.id in self._starting:
                state, error = HostNodeState.STARTING, None
            elif record.id in self._failed:
                state, error = HostNodeState.FAILED, self._failed[record.id]
            elif record.id in self._stopping or alive[record.id]:
                state, error = HostNodeState.RUNNING, None
            else:
                state, error = HostNodeState.FAILED, "the node's Ray processes exited"
            reports.append(
                AgentNodeReport(id=record.id, state=state, node_ip=record.node_ip, error=error)
            )
        return reports

    def reconcile(self, desired: list[NodeAssignment]) -> None:
        wanted = {a.id: a for a in desired}
        with self._lock:
            self._reap()
            for node_id, record in list(self.state.nodes.items()):
                busy = node_id in self._starting or node_id in self._stopping
                if node_id not in wanted and not busy:
                    log.info("stopping node %s (%s)", record.node, node_id)
                    self._stopping[node_id] = self._pool.submit(self.runner.stop, record)
            for node_id, assignment in wanted.items():
                if node_id not in self.state.nodes:
                    record = self.runner.record(assignment)
                    self.state.nodes[node_id] = record
                    self.state.save(self.data_dir)  # before starting: a restart finds it
                    log.info(
                        "starting node %s of cluster %s", assignment.node, assignment.cluster_name
                    )
                    self._starting[node_id] = self._pool.submit(
                        self.runner.start, assignment, record
                    )
                elif assignment.node == "head" and node_id not in self._checked_client_server:
                    self._checked_client_server.add(node_id)
                    record = self.state.nodes[node_id]
                    if node_id not in self._starting and self.runner.alive(record):
                        self._pool.submit(self.runner.ensure_client_server, assignment, record)

    def _reap(self) -> None:
        """Fold finished starts and stops into the state (called under the lock)."""
        changed = False
        for node_id, start in list(self._starting.items()):
            if not start.done():
                continue
            del self._starting[node_id]
            self._checked_client_server.add(node_id)
            try:
                self.state.nodes[node_id].node_ip = start.result()
                changed = True
            except Exception as exc:  # reported to the server as this node's failure
                self._failed[node_id] = str(exc)[:2000]
                log.warning("node %s failed to start: %s", node_id, exc)
        for node_id, stop in list(self._stopping.items()):
            if not stop.done():
                continue
            del self._stopping[node_id]
            with contextlib.suppress(Exception):
                stop.result()
            self.state.nodes.pop(node_id, None)
            self._failed.pop(node_id, None)
            self._checked_client_server.discard(node_id)
            changed = True
        if changed:
            self.state.save(self.data_dir)

    def stop_all(self) -> None:
        """Stop every node this agent started (the host was removed from the control plane)."""
        with self._lock:
            for record in list(self.state.nodes.values()):
                self.runner.stop(record)
            self.state.nodes.clear()
            self.state.save(self.data_dir)
