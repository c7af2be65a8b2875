"""``LocalClusterBackend``: Ray clusters as ``ray start`` processes on this host."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import psutil

from raydeck.backends.base import (
    BackendError,
    ClusterBackend,
    ClusterEndpoints,
    ClusterObservation,
    ClusterSpec,
    LogFileSource,
    MetricsSource,
    MetricsTarget,
    NodeLogFile,
    NodeObservation,
    PoolSpec,
)
from raydeck.backends.local.locks import file_lock
from raydeck.backends.local.planning import (
    HEAD,
    MAX_TEMP_DIR_LEN,
    choose_surplus,
    missing_workers,
    node_order,
    node_temp_dir,
)
from raydeck.backends.local.ports import PortAllocator
from raydeck.backends.local.processes import (
    ClusterProcess,
    cluster_processes,
    live_daemons,
    runs_client_server,
    terminate,
)
from raydeck.backends.local.raystart import (
    CLIENT_SERVER_LOG,
    NodeLaunch,
    check_resources,
    host_port,
    log_tail,
    run_ray_start,
    start_client_server,
    start_ray_process,
)
from raydeck.backends.local.readiness import wait_for_nodes, wait_for_port
from raydeck.backends.local.state import ClusterState, NodeRecord, StateStore
from raydeck.backends.os_user import (
    OsUser,
    RayUsers,
    check_can_run,
    demoted_env,
    private_dir,
)
from raydeck.core.errors import InvalidArgumentError

__all__ = ["LocalClusterBackend"]

_REGISTER_WAIT_SECONDS = 60.0


# Ray's own daemons' logs worth keeping (driver/worker output reaches us per job instead).
_COLLECTED_LOGS = ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err")


class LocalClusterBackend(ClusterBackend, LogFileSource, MetricsSource):
    """One head plus one worker raylet per replica, each with its own ports and temp dir.

    ``state_dir`` holds what only the server reads (ports, nodes); ``ray_dir`` the parent of
    each cluster's Ray temp dirs (default: ``state_dir``). With ``users``, every Ray process
    runs as the cluster's OS user (see backends/os_user.py), its temp dirs' parent 0700 and
    owned by that user.
    """

    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        bind_host: str = "127.0.0.1",
        port_range: tuple[int, int] = (30000, 60000),
        max_workers: int = 64,
        cpu_oversubscription: float = 4.0,
        ray_dir: Path | None = None,
        users: RayUsers | None = None,
    ) -> None:
        self._max_workers = max_workers
        self._max_node_cpus = (os.cpu_count() or 1) * cpu_oversubscription
        self._max_node_memory = psutil.virtual_memory().total
        self._state_dir = Path(state_dir).absolute()
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._ray_dir = Path(ray_dir).absolute() if ray_dir is not None else self._state_dir
        self._users = users
        self._bind_host = bind_host
        self._store = StateStore(self._state_dir)
        self._ports = PortAllocator(port_range)

    # -- ClusterBackend -------------------------------------------------------------------

    def apply(self, spec: ClusterSpec, *, prefer_remove: Sequence[str] = ()) -> ClusterEndpoints:
        self.check_capacity(spec)  # before any per-node work: a stored row may predate a cap
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
            for record in sorted(state.nodes.values(), key=node_order)
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
                # Short grace: nothing of the cluster survives, so a raylet's orderly goodbye
                # to a GCS that is going away too only costs time.
                terminate([cp.process for cp in cluster_processes(cluster_id)], grace_seconds=2)
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
            if self._users is not None:
                self._users.release(cluster_id)

    def check_capacity(self, spec: ClusterSpec) -> None:
        """Every node runs on this machine: no node may declare more memory than it has or
        more CPUs than its cores × the oversubscription setting, and a cluster has at most
        ``max_workers`` worker raylets."""
        fields = [
            ("head", spec.head),
            *((f"worker_pools[{i}]", pool) for i, pool in enumerate(spec.worker_pools)),
        ]
        for field, pool in fields:
            if pool.num_cpus > self._max_node_cpus:
                raise InvalidArgumentError(
                    f"{field}.num_cpus: {pool.num_cpus:g} is more than this host's local "
                    f"backend can give one node ({self._max_node_cpus:g}: cores × "
                    "RAYDECK_LOCAL_CPU_OVERSUBSCRIPTION)",
                    field=f"{field}.num_cpus",
                )
            if pool.memory is not None and pool.memory > self._max_node_memory:
                raise InvalidArgumentError(
                    f"{field}.memory: {pool.memory} bytes is more than this host has "
                    f"({self._max_node_memory})",
                    field=f"{field}.memory",
                )
        workers = sum(max(0, pool.replicas) for pool in spec.worker_pools)
        if workers > self._max_workers:
            raise InvalidArgumentError(
                f"worker_pools: {workers} worker replicas in all; a local cluster has at most "
                f"{self._max_workers} (RAYDECK_LOCAL_MAX_WORKERS)",
                field="worker_pools",
            )

    # -- LogFileSource ---------------------------------------------------------------------

    def log_files(self, spec: ClusterSpec) -> list[NodeLogFile]:
        state = self._store.load(spec.cluster_id)
        if state is None:
            return []
        found = []
        for record in sorted(state.nodes.values(), key=node_order):
            log_dir = Path(record.temp_dir) / "session_latest" / "logs"
            candidates = [log_dir / name for name in _COLLECTED_LOGS]
            candidates += sorted((log_dir / "serve").glob("replica_*.log"))
            found += [
                NodeLogFile(record.name, path, str(path.relative_to(log_dir)))
                for path in candidates
                if path.is_file()
            ]
        return found

    # -- MetricsSource ----------------------------------------------------------------------

    def metrics_targets(self, spec: ClusterSpec) -> list[MetricsTarget]:
        state = self._store.load(spec.cluster_id)
        if state is None:
            return []
        return [
            MetricsTarget(
                record.name,
                record.pool,
                host_port(record.node_ip or self._bind_host, record.ports.metrics_export),
            )
            for record in sorted(state.nodes.values(), key=node_order)
        ]

    # -- apply ----------------------------------------------------------------------------

    def _apply_locked(self, spec: ClusterSpec, prefer_remove: set[str]) -> ClusterEndpoints:
        cluster_id = spec.cluster_id
        state = self._store.load(cluster_id) or ClusterState(
            cluster_id, str(self._base_dir(cluster_id))
        )
        user = self._users.for_cluster(cluster_id) if self._users is not None else None
        home = self._prepare_dirs(state, user)
        procs = cluster_processes(cluster_id)
        old_head = state.head
        head_alive = self._drop_dead_nodes(state, procs)
        if user is not None and not head_alive:  # one clear error before any process starts
            check_can_run(user, sys.executable, demoted_env(os.environ, user, home), home)

        surplus = choose_surplus(state, spec, prefer_remove)
        starts: list[tuple[str, PoolSpec]] = [] if head_alive else [(HEAD, spec.head)]
        starts += missing_workers(state, spec, surplus)
        prefer = [old_head.port_base] if old_head is not None and not head_alive else []
        self._reserve(state, [name for name, _ in starts], [p.name for _, p in starts], prefer)
        head = state.head
        assert head is not None  # alive, or reserved just above

        client_server = None
        if head_alive and not runs_client_server(cp for cp in procs if cp.node == HEAD):
            client_server = start_client_server(
                self._launch(spec, head, spec.head, head, user, home)
            )
        reserved = [state.nodes[name].port_base for name, _ in starts]
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(starts) + len(surplus))) as pool:
                stops = [pool.submit(self._stop_node, cluster_id, r) for r in surplus]
                failed, started_client = self._start_nodes(
                    pool, state, spec, dict(starts), user, home
                )
                for future in stops:
                    future.result()
        finally:
            self._ports.release(reserved)
        client_server = client_server or started_client
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
        endpoints = self._endpoints(head)
        if starts:
            wait_for_nodes(
                endpoints.dashboard_url,
                spec.ray_auth_token,
                [state.nodes[name].ports.node_manager for name, _ in starts],
                _REGISTER_WAIT_SECONDS,
            )
        if client_server is not None:
            self._wait_for_client_server(cluster_id, head, client_server)
        return endpoints

    def _drop_dead_nodes(self, state: ClusterState, procs: list[ClusterProcess]) -> bool:
        """Forget nodes whose core daemons are gone and kill their leftovers, plus marked
        processes no record explains; returns whether the head is alive. Workers cannot
        rejoin a new GCS, so a dead head means starting the whole cluster over."""
        daemons = live_daemons(procs)
        head_alive = state.head is not None and _is_alive(HEAD, daemons)
        if head_alive:
            dead = {name for name in state.nodes if not _is_alive(name, daemons)}
        else:
            dead = set(state.nodes)
        terminate(
            cp.process
            for cp in procs
            if cp.node is None or cp.node in dead or cp.node not in state.nodes
        )
        for name in dead:
            self._forget(state, name)
        return head_alive

    def _start_nodes(
        self,
        pool: ThreadPoolExecutor,
        state: ClusterState,
        spec: ClusterSpec,
        starts: dict[str, PoolSpec],
        user: OsUser | None,
        home: Path,
    ) -> tuple[dict[str, BackendError], subprocess.Popen[bytes] | None]:
        """Start every node at once (workers wait for the head), plus the head's Ray Client
        proxy when the head is new; returns failures by node, and that proxy."""
        head = state.head
        assert head is not None
        processes: dict[str, subprocess.Popen[bytes]] = {}
        futures: dict[str, Future[str]] = {}
        failed: dict[str, BackendError] = {}
        for name, pool_spec in starts.items():
            launch = self._launch(spec, state.nodes[name], pool_spec, head, user, home)
            shutil.rmtree(launch.temp_dir, ignore_errors=True)  # stale sockets of a prior run
            try:
                processes[name] = start_ray_process(launch)
            except BackendError as exc:
                failed[name] = exc
                continue
            futures[name] = pool.submit(run_ray_start, launch, processes[name])
        client_server = None
        if HEAD in processes:
            try:
                client_server = start_client_server(
                    self._launch(spec, head, starts[HEAD], head, user, home)
                )
            except BackendError as exc:
                failed[HEAD] = exc

        if HEAD in failed or (HEAD in futures and futures[HEAD].exception() is not None):
            for process in processes.values():
                process.kill()  # workers would wait for a head that never comes
        for name, future in futures.items():
            try:
                state.nodes[name].node_ip = future.result()
            except BackendError as exc:
                failed[name] = exc
            except (OSError, subprocess.SubprocessError) as exc:
                failed[name] = BackendError(f"ray start for node {name!r} failed: {exc}")
        return failed, client_server

    def _wait_for_client_server(
        self, cluster_id: str, head: NodeRecord, process: subprocess.Popen[bytes]
    ) -> None:
        port = head.ports.ray_client
        if wait_for_port(self._bind_host, port, _REGISTER_WAIT_SECONDS, process.poll):
            return
        process.kill()
        log = Path(head.temp_dir) / CLIENT_SERVER_LOG
        tail = log_tail(log)
        reason = tail.splitlines()[-1] if tail else "no output"
        raise BackendError(
            f"the Ray Client server of cluster {cluster_id} did not listen on "
            f"port {port}: {reason}",
            log_tail=tail,
            log_file=str(log),
        )

    def _launch(
        self,
        spec: ClusterSpec,
        record: NodeRecord,
        pool: PoolSpec,
        head: NodeRecord,
        user: OsUser | None,
        home: Path,
    ) -> NodeLaunch:
        return NodeLaunch(
            cluster_id=spec.cluster_id,
            node=record.name,
            pool=pool,
            ports=record.ports,
            temp_dir=Path(record.temp_dir),
            bind_host=self._bind_host,
            auth_token=spec.ray_auth_token,
            extra_env=spec.env,
            gcs_port=head.ports.gcs,
            run_as=user,
            home=home,
        )

    def _prepare_dirs(self, state: ClusterState, user: OsUser | None) -> Path:
        """The parent of the cluster's Ray temp dirs (0700, the cluster user's: Ray makes its
        session dirs 0777, so this is what keeps other users out) and the Ray processes'
        HOME inside it; returns that HOME."""
        base = private_dir(Path(state.base_dir), user)
        return private_dir(base / "home", user)

    def _reserve(
        self, state: ClusterState, names: list[str], pools: list[str], prefer: list[int]
    ) -> None:
        """Give each new node a port slot and a temp dir, and record it before it starts."""
        if not names:
            return
        with file_lock(self._state_dir / ".locks" / "slots.lock"):
            used = self._store.used_port_bases(exclude=state.cluster_id)
            used.update(n.port_base for n in state.nodes.values())
            owner = f"{self._state_dir}/{state.cluster_id}"
            bases = self._ports.allocate(len(names), used, prefer, owner)
            for name, pool, base in zip(names, pools, bases, strict=True):
                state.nodes[name] = NodeRecord(
                    name=name,
                    pool=pool,
                    port_base=base,
                    temp_dir=str(node_temp_dir(Path(state.base_dir), name, base)),
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
        preferred = self._ray_dir / cluster_id / "ray"
        if len(str(preferred)) + len("/n65535") <= MAX_TEMP_DIR_LEN:
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
            serve_port=ports.serve,
        )


def _check_pools(spec: ClusterSpec) -> None:
    names = [p.name for p in spec.worker_pools]
    if HEAD in names or len(set(names)) != len(names):
        raise BackendError(
            f"cluster {spec.cluster_id}: worker pool names must be unique, not 'head'"
        )
    for pool in (spec.head, *spec.worker_pools):
        check_resources(pool)


def _is_alive(name: str, daemons: dict[str, set[str]]) -> bool:
    needed = {"gcs_server", "raylet"} if name == HEAD else {"raylet"}
    return needed <= daemons.get(name, set())
