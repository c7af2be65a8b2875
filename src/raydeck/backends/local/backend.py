"""``LocalClusterBackend``: Ray clusters as ``ray start`` processes on this host."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

from raydeck.backends.base import (
    BackendError,
    ClusterBackend,
    ClusterEndpoints,
    ClusterObservation,
    ClusterSpec,
    NodeObservation,
    PoolSpec,
)
from raydeck.backends.local.locks import file_lock
from raydeck.backends.local.ports import PortAllocator
from raydeck.backends.local.processes import cluster_processes, live_daemons, terminate
from raydeck.backends.local.raystart import (
    NodeLaunch,
    host_port,
    run_ray_start,
    start_ray_process,
)
from raydeck.backends.local.readiness import wait_for_nodes, wait_for_port
from raydeck.backends.local.state import ClusterState, NodeRecord, StateStore

__all__ = ["LocalClusterBackend"]

HEAD = "head"
# Ray puts Unix sockets at <temp>/session_<date>_<pid>/sockets/plasma_store (64 chars past
# <temp>), and sun_path holds 107; keep temp dirs well below the difference.
_MAX_TEMP_DIR_LEN = 40
_GCS_WAIT_SECONDS = 90.0
_REGISTER_WAIT_SECONDS = 60.0


class LocalClusterBackend(ClusterBackend):
    """One head plus one worker raylet per replica, each with its own ports and temp dir."""

    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        bind_host: str = "127.0.0.1",
        port_range: tuple[int, int] = (30000, 60000),
    ) -> None:
        self._state_dir = Path(state_dir).absolute()
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._bind_host = bind_host
        self._store = StateStore(self._state_dir)
        self._ports = PortAllocator(port_range)

    # -- ClusterBackend -------------------------------------------------------------------

    def apply(self, spec: ClusterSpec, *, prefer_remove: Sequence[str] = ()) -> ClusterEndpoints:
        _check_pools(spec)
        with self._cluster_lock(spec.cluster_id):
            return self._apply_locked(spec, set(prefer_remove))

    def observe(self, spec: ClusterSpec) -> ClusterObservation:
        state = self._store.load(spec.cluster_id)
        if state is None or state.head is None:
            return ClusterObservation(head_alive=False, endpoints=None)
        daemons = live_daemons(cluster_processes(spec.cluster_id))
        nodes = tuple(
            NodeObservation(
                name=record.name,
                pool=record.pool,
                alive=_is_alive(record.name, daemons),
                address=host_port(record.node_ip or self._bind_host, record.ports.node_manager),
            )
            for record in sorted(state.nodes.values(), key=_node_order)
        )
        return ClusterObservation(
            head_alive=_is_alive(HEAD, daemons),
            endpoints=self._endpoints(state.head),
            nodes=nodes,
        )

    def delete(self, spec: ClusterSpec) -> None:
        cluster_id = spec.cluster_id
        with self._cluster_lock(cluster_id):
            try:
                terminate([cp.process for cp in cluster_processes(cluster_id)])
            except OSError as exc:
                raise BackendError(f"cannot stop cluster {cluster_id}: {exc}") from exc
            state = self._store.load(cluster_id)
            dirs = {self._base_dir(cluster_id)}
            if state is not None:
                dirs.add(Path(state.base_dir))
                dirs.update(Path(n.temp_dir) for n in state.nodes.values())
            for directory in dirs:
                shutil.rmtree(directory, ignore_errors=True)
            self._store.remove(cluster_id)

    # -- apply ----------------------------------------------------------------------------

    def _apply_locked(self, spec: ClusterSpec, prefer_remove: set[str]) -> ClusterEndpoints:
        cluster_id = spec.cluster_id
        state = self._store.load(cluster_id) or ClusterState(
            cluster_id, str(self._base_dir(cluster_id))
        )
        procs = cluster_processes(cluster_id)
        daemons = live_daemons(procs)
        old_head = state.head
        head_alive = old_head is not None and _is_alive(HEAD, daemons)

        # Workers cannot rejoin a new GCS, so a dead head means starting over; otherwise
        # drop only nodes whose raylet is gone, plus marked processes no record explains.
        if head_alive:
            dead = {name for name in state.nodes if not _is_alive(name, daemons)}
        else:
            dead = set(state.nodes)
        orphans = [
            cp.process
            for cp in procs
            if cp.node is None or cp.node in dead or cp.node not in state.nodes
        ]
        terminate(orphans)
        for name in dead:
            self._forget(state, name)

        surplus = _choose_surplus(state, spec, prefer_remove)
        starts: list[tuple[str, PoolSpec]] = [] if head_alive else [(HEAD, spec.head)]
        starts += _missing_workers(state, spec, surplus)
        prefer = [old_head.port_base] if old_head is not None and not head_alive else []
        self._reserve(state, [name for name, _ in starts], [p.name for _, p in starts], prefer)

        with ThreadPoolExecutor(max_workers=max(1, len(starts) + len(surplus))) as pool:
            stops = [pool.submit(self._stop_node, cluster_id, r) for r in surplus]
            failed = self._start_nodes(pool, state, spec, dict(starts))
            for future in stops:
                future.result()
        for record in surplus:
            state.nodes.pop(record.name, None)

        if failed:
            # Without a head nothing else can run; a failed worker leaves the rest standing.
            self._abandon(state, list(state.nodes) if HEAD in failed else list(failed))
            first = next(iter(failed.values()))
            if len(failed) == 1:
                raise first
            more = f" (and {len(failed) - 1} more node(s) failed)"
            raise BackendError(first.message + more, **first.details) from first
        self._store.save(state)

        started = [name for name, _ in starts]

        head = state.head
        assert head is not None  # started above or alive already
        endpoints = self._endpoints(head)
        if started:
            wait_for_nodes(
                endpoints.dashboard_url,
                spec.ray_auth_token,
                [state.nodes[name].ports.node_manager for name in started],
                _REGISTER_WAIT_SECONDS,
            )
        return endpoints

    def _start_nodes(
        self,
        pool: ThreadPoolExecutor,
        state: ClusterState,
        spec: ClusterSpec,
        starts: dict[str, PoolSpec],
    ) -> dict[str, BackendError]:
        """Start the head (if asked), then every worker at once; returns failures by node."""
        head = state.head
        assert head is not None
        futures: dict[str, Future[str]] = {}
        if HEAD in starts:
            launch = self._launch(spec, head, starts[HEAD], head.ports.gcs)
            try:
                process = start_ray_process(launch)
            except BackendError as exc:
                return {HEAD: exc}
            futures[HEAD] = pool.submit(run_ray_start, launch, process)
            # Workers only need the GCS, which is up seconds before the head's dashboard, so
            # they start while the head is still finishing.
            gcs_up = wait_for_port(
                self._bind_host,
                head.ports.gcs,
                _GCS_WAIT_SECONDS,
                give_up=futures[HEAD].done,
            )
            if not gcs_up:
                process.kill()  # unblocks the thread waiting on it; _abandon cleans up
                return {HEAD: _failure(futures[HEAD], "the head's GCS did not come up")}
        for name, pool_spec in starts.items():
            if name != HEAD:
                launch = self._launch(spec, state.nodes[name], pool_spec, head.ports.gcs)
                futures[name] = pool.submit(run_ray_start, launch)

        failed: dict[str, BackendError] = {}
        for name, future in futures.items():
            try:
                state.nodes[name].node_ip = future.result()
            except BackendError as exc:
                failed[name] = exc
            except (OSError, subprocess.SubprocessError) as exc:
                failed[name] = BackendError(f"ray start for node {name!r} failed: {exc}")
        return failed

    def _launch(
        self, spec: ClusterSpec, record: NodeRecord, pool: PoolSpec, gcs_port: int
    ) -> NodeLaunch:
        temp_dir = Path(record.temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)  # stale sockets of an earlier run
        return NodeLaunch(
            cluster_id=spec.cluster_id,
            node=record.name,
            pool=pool,
            ports=record.ports,
            temp_dir=temp_dir,
            bind_host=self._bind_host,
            auth_token=spec.ray_auth_token,
            extra_env=spec.env,
            gcs_port=gcs_port,
        )

    def _reserve(
        self, state: ClusterState, names: list[str], pools: list[str], prefer: list[int]
    ) -> None:
        """Give each new node a port slot and a temp dir, and record it before it starts."""
        if not names:
            return
        with file_lock(self._state_dir / ".locks" / "slots.lock"):
            used = self._store.used_port_bases(exclude=state.cluster_id)
            used.update(n.port_base for n in state.nodes.values())
            bases = self._ports.allocate(len(names), used, prefer)
            for name, pool, base in zip(names, pools, bases, strict=True):
                state.nodes[name] = NodeRecord(
                    name=name,
                    pool=pool,
                    port_base=base,
                    temp_dir=str(_node_temp_dir(Path(state.base_dir), name, base)),
                )
            # Saved under the lock: other clusters' allocations read this file.
            self._store.save(state)

    def _stop_node(self, cluster_id: str, record: NodeRecord) -> None:
        procs = [cp.process for cp in cluster_processes(cluster_id) if cp.node == record.name]
        terminate(procs)
        shutil.rmtree(record.temp_dir, ignore_errors=True)

    def _forget(self, state: ClusterState, name: str) -> None:
        record = state.nodes.pop(name, None)
        if record is not None:
            shutil.rmtree(record.temp_dir, ignore_errors=True)

    def _abandon(self, state: ClusterState, names: Iterable[str]) -> None:
        """Undo a failed start: kill what it left behind and free the slots."""
        names = set(names)
        terminate(cp.process for cp in cluster_processes(state.cluster_id) if cp.node in names)
        for name in names:
            self._forget(state, name)
        self._store.save(state)

    # -- helpers --------------------------------------------------------------------------

    def _cluster_lock(self, cluster_id: str) -> AbstractContextManager[None]:
        return file_lock(self._state_dir / ".locks" / f"{cluster_id}.lock")

    def _base_dir(self, cluster_id: str) -> Path:
        preferred = self._store.cluster_dir(cluster_id) / "ray"
        if len(str(preferred)) + len("/n65535") <= _MAX_TEMP_DIR_LEN:
            return preferred
        # Deterministic, so delete finds it even when the state file is gone.
        digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:10]
        return Path("/tmp") / f"rd-{digest}"

    def _endpoints(self, head: NodeRecord) -> ClusterEndpoints:
        ports, host = head.ports, self._bind_host
        return ClusterEndpoints(
            gcs_address=host_port(host, ports.gcs),
            dashboard_url=f"http://{host_port(host, ports.dashboard)}",
            ray_client_address=host_port(host, ports.ray_client),
        )


def _check_pools(spec: ClusterSpec) -> None:
    names = [p.name for p in spec.worker_pools]
    if HEAD in names or len(set(names)) != len(names):
        raise BackendError(
            f"cluster {spec.cluster_id}: worker pool names must be unique, not 'head'"
        )


def _is_alive(name: str, daemons: dict[str, set[str]]) -> bool:
    needed = {"gcs_server", "raylet"} if name == HEAD else {"raylet"}
    return needed <= daemons.get(name, set())


def _index(record: NodeRecord) -> int:
    suffix = record.name[len(record.pool) + 1 :]
    return int(suffix) if suffix.isdigit() else -1


def _node_order(record: NodeRecord) -> tuple[bool, str, int]:
    return (record.pool != HEAD, record.pool, _index(record))


def _choose_surplus(
    state: ClusterState, spec: ClusterSpec, prefer_remove: set[str]
) -> list[NodeRecord]:
    wanted = {p.name: max(0, p.replicas) for p in spec.worker_pools}
    surplus: list[NodeRecord] = []
    for pool in {r.pool for r in state.workers()}:
        nodes = [r for r in state.workers() if r.pool == pool]
        extra = len(nodes) - wanted.get(pool, 0)
        if extra > 0:
            nodes.sort(key=lambda r: (r.name not in prefer_remove, -_index(r)))
            surplus += nodes[:extra]
    return surplus


def _missing_workers(
    state: ClusterState, spec: ClusterSpec, surplus: list[NodeRecord]
) -> list[tuple[str, PoolSpec]]:
    leaving = {r.name for r in surplus}
    missing: list[tuple[str, PoolSpec]] = []
    for pool in spec.worker_pools:
        kept = [r for r in state.workers() if r.pool == pool.name and r.name not in leaving]
        used = {_index(r) for r in kept}
        index = 0
        for _ in range(max(0, pool.replicas) - len(kept)):
            while index in used:
                index += 1
            used.add(index)
            missing.append((f"{pool.name}-{index}", pool))
    return missing


def _node_temp_dir(base: Path, name: str, port_base: int) -> Path:
    by_name = base / name
    if len(str(by_name)) <= _MAX_TEMP_DIR_LEN and name.replace("-", "").isalnum():
        return by_name
    return base / f"n{port_base}"


def _failure(future: Future[str], reason: str) -> BackendError:
    if future.done():
        exc = future.exception()
        if isinstance(exc, BackendError):
            return exc
        if exc is not None:
            return BackendError(f"{reason}: {exc}")
    return BackendError(reason)
