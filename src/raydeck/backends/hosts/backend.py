"""``HostsClusterBackend``: Ray clusters whose nodes run on registered hosts.

The backend never reaches a host itself. It places nodes (rows of ``host_nodes``: which host,
which port slot, what resources) and each host's agent, polling the control plane, is told
what to run and reports back (``server/services/hosts.py``). ``apply`` then waits for the
agents' reports and for Ray to list the new nodes, like the local backend waits for its own
processes. Everything lives in the database, so a restarted server simply reads it back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from raydeck.backends.base import (
    BackendError,
    ClusterBackend,
    ClusterEndpoints,
    ClusterObservation,
    ClusterSpec,
    MetricsSource,
    MetricsTarget,
    NodeObservation,
    PoolSpec,
)
from raydeck.backends.hosts.placement import (
    HostView,
    PlacementShortfall,
    choose_port_base,
    place_nodes,
)
from raydeck.backends.hosts.store import host_views, is_live, total_capacity
from raydeck.backends.local.planning import HEAD, choose_surplus, missing_workers
from raydeck.backends.local.ports import NodePorts
from raydeck.backends.local.raystart import check_resources, host_port
from raydeck.backends.local.readiness import wait_for_nodes
from raydeck.backends.local.state import ClusterState, NodeRecord
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.ids import new_id
from raydeck.core.models.hosts import HostNodeState, HostState
from raydeck.db.models import HostNodeRow, HostRow
from raydeck.db.session import Database

__all__ = ["HostsClusterBackend"]

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.25


class HostsClusterBackend(ClusterBackend, MetricsSource):
    kind = "hosts"

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_timeout: float = 15.0,
        port_range: tuple[int, int] = (30000, 60000),
        start_timeout: float = 300.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self._db = db
        self._timeout = heartbeat_timeout
        self._port_range = port_range
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        # Placements of different clusters read what is free and which port slots are taken
        # on a host, then write: one at a time, so two never take the same room or slot.
        self._placing = threading.Lock()
        self._shortfalls: dict[str, str] = {}  # cluster id -> what its last apply could not place

    # -- ClusterBackend -------------------------------------------------------------------

    def apply(self, spec: ClusterSpec, *, prefer_remove: Sequence[str] = ()) -> ClusterEndpoints:
        _check_pools(spec)
        with self._cluster_lock(spec.cluster_id):
            with self._placing:
                new_ids = self._plan(spec, set(prefer_remove))
            self._wait_started(spec, new_ids)
            endpoints, ports = self._endpoints_and_ports(spec.cluster_id, new_ids)
            if ports:
                wait_for_nodes(endpoints.dashboard_url, spec.ray_auth_token, ports, 60.0)
            return endpoints

    def observe(self, spec: ClusterSpec) -> ClusterObservation:
        now = datetime.now(UTC)
        with self._db.session() as session:
            rows = _cluster_rows(session, spec.cluster_id)
            hosts = _hosts_of(session, rows)
            nodes = []
            head_problem: str | None = "the head node is not placed on any host"
            head_alive = False
            for row in sorted(rows, key=_row_order):
                host = hosts.get(row.host_id)
                live = host is not None and is_live(host, now, self._timeout)
                alive = live and row.state == HostNodeState.RUNNING
                address = host.address if host is not None else None
                nodes.append(
                    NodeObservation(
                        name=row.node,
                        pool=row.pool,
                        alive=alive,
                        address=host_port(row.node_ip or address or "?", row.port_base)
                        if address
                        else None,
                    )
                )
                if row.node == HEAD:
                    head_alive = alive
                    head_problem = None if alive else _head_problem(spec, row, host, live)
            endpoints = _endpoints(rows, hosts)
        return ClusterObservation(
            head_alive=head_alive,
            endpoints=endpoints,
            nodes=tuple(nodes),
            head_problem=head_problem,
            shortfall=self._shortfalls.get(spec.cluster_id),
        )

    def delete(self, spec: ClusterSpec) -> None:
        self._shortfalls.pop(spec.cluster_id, None)
        with self._cluster_lock(spec.cluster_id), self._db.session() as session:
            rows = _cluster_rows(session, spec.cluster_id)
            ids = {r.id for r in rows}
            session.execute(delete(HostNodeRow).where(HostNodeRow.cluster_id == spec.cluster_id))
        # The agents stop what is no longer wanted at their next sync; wait for their reports.
        deadline = time.monotonic() + self._stop_timeout
        while ids and time.monotonic() < deadline:
            if not self._still_reported(ids):
                return
            time.sleep(_POLL_SECONDS)

    def check_capacity(self, spec: ClusterSpec) -> None:
        """Each node kind must fit, empty, on at least one registered host (whatever runs on
        it now): otherwise no waiting would ever help. One read of the host registry."""
        with self._db.session() as session:
            hosts = list(session.scalars(select(HostRow).order_by(HostRow.name)))
        if not hosts:
            raise InvalidArgumentError(
                "no hosts have joined yet: run `raydeck node join` on a machine first "
                "(a join token comes from `raydeck hosts token create`)",
                field="backend",
            )
        pools = [
            ("head", spec.head),
            *((f"worker_pools[{i}]", p) for i, p in enumerate(spec.worker_pools)),
        ]
        for field, pool in pools:
            empty = [
                HostView(h.id, h.name, dict(h.labels), total_capacity(h), h.memory > 0)
                for h in hosts
            ]
            try:
                place_nodes(empty, [(pool.name, pool)], {})
            except PlacementShortfall as exc:
                detail = exc.message.replace("not enough room on the hosts: ", "")
                raise InvalidArgumentError(
                    f"{detail.replace('free', 'in total')}", field=field
                ) from None

    # -- MetricsSource ----------------------------------------------------------------------

    def metrics_targets(self, spec: ClusterSpec) -> list[MetricsTarget]:
        with self._db.session() as session:
            rows = _cluster_rows(session, spec.cluster_id)
            hosts = _hosts_of(session, rows)
            return [
                MetricsTarget(
                    row.node,
                    row.pool,
                    host_port(hosts[row.host_id].address, NodePorts(row.port_base).metrics_export),
                )
                for row in sorted(rows, key=_row_order)
                if row.state == HostNodeState.RUNNING and row.host_id in hosts
            ]

    # -- apply ----------------------------------------------------------------------------

    def _plan(self, spec: ClusterSpec, prefer_remove: set[str]) -> list[str]:
        """One transaction: drop dead and surplus nodes, place missing ones; returns the ids
        of the nodes placed now."""
        now = datetime.now(UTC)
        with self._db.session() as session:
            rows = _cluster_rows(session, spec.cluster_id)
            hosts = _hosts_of(session, rows)
            head = next((r for r in rows if r.node == HEAD), None)
            dead = {r.id for r in rows if not self._usable(r, hosts, now)}
            if head is None or head.id in dead:
                dead = {r.id for r in rows}  # workers cannot join a new head's GCS
            # Workers on a draining host move elsewhere (its head stays until a repair).
            dead |= {
                r.id
                for r in rows
                if r.node != HEAD
                and r.host_id in hosts
                and hosts[r.host_id].state == HostState.DRAINING
            }
            kept = [r for r in rows if r.id not in dead]
            state = ClusterState(
                spec.cluster_id,
                "",
                {r.node: NodeRecord(r.node, r.pool, r.port_base, "") for r in kept},
            )
            surplus = {r.name for r in choose_surplus(state, spec, prefer_remove)}
            gone = dead | {r.id for r in kept if r.node in surplus}
            if gone:
                session.execute(delete(HostNodeRow).where(HostNodeRow.id.in_(gone)))
                session.flush()
            kept = [r for r in kept if r.id not in gone]

            starts: list[tuple[str, PoolSpec]] = []
            if not any(r.node == HEAD for r in kept):
                starts.append((HEAD, spec.head))
            starts += missing_workers(state, spec, [state.nodes[n] for n in surplus])
            if not starts:
                self._shortfalls.pop(spec.cluster_id, None)
                return []
            existing: dict[str, Counter[str]] = {}
            for r in kept:
                existing.setdefault(r.pool, Counter())[r.host_id] += 1
            try:
                placement = place_nodes(host_views(session, now, self._timeout), starts, existing)
                self._shortfalls.pop(spec.cluster_id, None)
            except PlacementShortfall as short:
                if not any(r.node == HEAD for r in kept) and HEAD not in short.placed:
                    raise  # no head, no cluster
                # Start what fits; the pool shows what is missing and why, and the next
                # apply (health checks re-apply a short pool) places the rest once there is room.
                placement = short.placed
                starts = [(node, pool) for node, pool in starts if node in placement]
                self._shortfalls[spec.cluster_id] = short.message
                log.warning("cluster %s: %s", spec.name, short.message)
            return self._insert(session, spec, starts, placement, kept)

    def _usable(self, row: HostNodeRow, hosts: dict[str, HostRow], now: datetime) -> bool:
        host = hosts.get(row.host_id)
        return (
            host is not None
            and is_live(host, now, self._timeout)
            and row.state != HostNodeState.FAILED
        )

    def _insert(
        self,
        session: Session,
        spec: ClusterSpec,
        starts: list[tuple[str, PoolSpec]],
        placement: dict[str, str],
        kept: list[HostNodeRow],
    ) -> list[str]:
        cluster_bases = {r.port_base for r in kept}
        host_ids = set(placement.values())
        on_hosts = session.scalars(select(HostNodeRow).where(HostNodeRow.host_id.in_(host_ids)))
        host_bases: dict[str, set[int]] = {}
        for row in on_hosts:
            host_bases.setdefault(row.host_id, set()).add(row.port_base)
        ids = []
        for node, pool in starts:
            host_id = placement[node]
            taken = cluster_bases | host_bases.get(host_id, set())
            base = choose_port_base(self._port_range, taken)
            cluster_bases.add(base)
            host_bases.setdefault(host_id, set()).add(base)
            row = HostNodeRow(
                id=new_id("hn"),
                cluster_id=spec.cluster_id,
                host_id=host_id,
                node=node,
                pool=pool.name,
                port_base=base,
                launch={
                    "cluster_name": spec.name,
                    "num_cpus": pool.num_cpus,
                    "num_gpus": pool.num_gpus,
                    "memory": pool.memory,
                    "resources": dict(pool.resources),
                    "env": dict(spec.env),
                },
                state=HostNodeState.PENDING.value,
            )
            session.add(row)
            ids.append(row.id)
        return ids

    def _wait_started(self, spec: ClusterSpec, ids: list[str]) -> None:
        """Until every new node is RUNNING by its agent's report; raises on a failure."""
        deadline = time.monotonic() + self._start_timeout
        while ids:
            now = datetime.now(UTC)
            with self._db.session() as session:
                rows = list(session.scalars(select(HostNodeRow).where(HostNodeRow.id.in_(ids))))
                hosts = _hosts_of(session, rows)
                if len(rows) < len(ids):
                    raise BackendError(
                        f"cluster {spec.name}: nodes were removed while starting "
                        "(their host was deleted?)"
                    )
                failed = [r for r in rows if r.state == HostNodeState.FAILED]
                if failed:
                    first = failed[0]
                    where = hosts[first.host_id].name if first.host_id in hosts else "?"
                    raise BackendError(
                        f"node {first.node!r} of cluster {spec.name} failed on host {where}: "
                        f"{first.error or 'no reason given'}",
                        log_tail=first.error or "",
                    )
                lost = [r for r in rows if not is_live(hosts[r.host_id], now, self._timeout)]
                if lost:
                    raise BackendError(
                        f"host {hosts[lost[0].host_id].name} was lost while starting node "
                        f"{lost[0].node!r} of cluster {spec.name}"
                    )
                waiting = [r for r in rows if r.state != HostNodeState.RUNNING]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    names = ", ".join(
                        f"{r.node} on {hosts[r.host_id].name} ({r.state})" for r in waiting
                    )
                    raise BackendError(
                        f"cluster {spec.name}: nodes not running after "
                        f"{self._start_timeout:.0f}s: {names}"
                    )
            time.sleep(_POLL_SECONDS)

    def _endpoints_and_ports(
        self, cluster_id: str, new_ids: list[str]
    ) -> tuple[ClusterEndpoints, list[int]]:
        with self._db.session() as session:
            rows = _cluster_rows(session, cluster_id)
            endpoints = _endpoints(rows, _hosts_of(session, rows))
            ports = [r.port_base for r in rows if r.id in set(new_ids)]
        if endpoints is None:
            raise BackendError(f"cluster {cluster_id} has no head node placed")
        return endpoints, ports

    def _still_reported(self, ids: set[str]) -> bool:
        now = datetime.now(UTC)
        with self._db.session() as session:
            for host in session.scalars(select(HostRow)):
                if is_live(host, now, self._timeout) and ids & set(host.observed):
                    return True
        return False

    def _cluster_lock(self, cluster_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(cluster_id, threading.Lock())


def _check_pools(spec: ClusterSpec) -> None:
    names = [p.name for p in spec.worker_pools]
    if HEAD in names or len(set(names)) != len(names):
        raise BackendError(
            f"cluster {spec.cluster_id}: worker pool names must be unique, not 'head'",
            retryable=False,
        )
    for pool in (spec.head, *spec.worker_pools):
        check_resources(pool)


def _cluster_rows(session: Session, cluster_id: str) -> list[HostNodeRow]:
    return list(session.scalars(select(HostNodeRow).where(HostNodeRow.cluster_id == cluster_id)))


def _hosts_of(session: Session, rows: Sequence[HostNodeRow]) -> dict[str, HostRow]:
    ids = {r.host_id for r in rows}
    if not ids:
        return {}
    return {h.id: h for h in session.scalars(select(HostRow).where(HostRow.id.in_(ids)))}


def _row_order(row: HostNodeRow) -> tuple[bool, str, int]:
    suffix = row.node[len(row.pool) + 1 :]
    return (row.node != HEAD, row.pool, int(suffix) if suffix.isdigit() else -1)


def _endpoints(rows: Sequence[HostNodeRow], hosts: dict[str, HostRow]) -> ClusterEndpoints | None:
    head = next((r for r in rows if r.node == HEAD), None)
    if head is None or head.host_id not in hosts:
        return None
    ip = hosts[head.host_id].address
    ports = NodePorts(head.port_base, head=True)
    return ClusterEndpoints(
        gcs_address=host_port(ip, ports.gcs),
        dashboard_url=f"http://{host_port(ip, ports.dashboard)}",
        ray_client_address=host_port(ip, ports.ray_client),
        serve_port=ports.serve,
    )


def _head_problem(spec: ClusterSpec, row: HostNodeRow, host: HostRow | None, live: bool) -> str:
    if host is None:
        return "the head's host was removed"
    if not live:
        return (
            f"the head's host {host.name} is lost (its agent stopped reporting); "
            f"`raydeck clusters repair {spec.name}` restarts the cluster on other hosts"
        )
    if row.state == HostNodeState.FAILED:
        return f"the head node failed on host {host.name}: {row.error or 'no reason given'}"
    return f"the head node on host {host.name} is {row.state}"
