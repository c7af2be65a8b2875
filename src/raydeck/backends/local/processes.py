"""Finding and stopping the processes of one local cluster (never a global ``ray stop``).

Every ``ray start`` gets ``RAYDECK_CLUSTER_ID``/``RAYDECK_NODE`` in its environment and runs
in a session of its own. Ray's daemons (gcs_server, raylet, dashboard, log monitor, Ray
Client server...) keep the variables readable in ``/proc/<pid>/environ``, but processes that
rename themselves with setproctitle (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``,
``ray-dashboard-*`` modules, often workers) may overwrite that memory, so the markers alone
miss them. They are found as descendants of a marked process or, once orphaned, as unmarked
processes in the session of a marked process whose session leader (the exited ``ray start``)
is gone: that session holds nothing but the node's processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

__all__ = [
    "CLUSTER_ENV",
    "NODE_ENV",
    "ClusterProcess",
    "cluster_processes",
    "find_cluster_processes",
    "live_daemons",
    "many_clusters_processes",
    "runs_client_server",
    "terminate",
]

CLUSTER_ENV = "RAYDECK_CLUSTER_ID"
NODE_ENV = "RAYDECK_NODE"


@dataclass(frozen=True)
class ClusterProcess:
    process: psutil.Process
    node: str | None  # None when neither the process nor an ancestor names its node
    name: str


@dataclass(frozen=True)
class _Seen:
    process: psutil.Process
    ppid: int
    sid: int
    name: str
    cluster: str | None  # None: no marker readable
    node: str | None


def _scan() -> list[_Seen]:
    seen: list[_Seen] = []
    for proc in psutil.process_iter():
        try:
            ppid = proc.ppid()
            name = proc.name()
            sid = os.getsid(proc.pid)
            try:
                env = proc.environ()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                env = {}
        except (psutil.Error, OSError):
            continue  # gone, or not ours to read
        seen.append(_Seen(proc, ppid, sid, name, env.get(CLUSTER_ENV), env.get(NODE_ENV)))
    return seen


def cluster_processes(cluster_id: str) -> list[ClusterProcess]:
    """Every live process of one cluster, each with the node it belongs to."""
    return _of_cluster(_scan(), cluster_id)


def many_clusters_processes(cluster_ids: Iterable[str]) -> dict[str, list[ClusterProcess]]:
    """``cluster_processes`` of several clusters from one scan of the process table."""
    seen = _scan()
    return {cluster_id: _of_cluster(seen, cluster_id) for cluster_id in cluster_ids}


def _of_cluster(seen: list[_Seen], cluster_id: str) -> list[ClusterProcess]:
    by_pid = {s.process.pid: s for s in seen}
    node_of: dict[int, str | None] = {
        s.process.pid: s.node for s in seen if s.cluster == cluster_id
    }

    children: dict[int, list[_Seen]] = {}
    for s in seen:
        children.setdefault(s.ppid, []).append(s)
    stack = list(node_of)
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            if child.process.pid not in node_of and child.cluster in (None, cluster_id):
                node_of[child.process.pid] = node_of[pid]
                stack.append(child.process.pid)

    # Orphans: same session as a marked process, and that session is one we created (its
    # leader, the `ray start` we ran, has exited), not e.g. a user's shell.
    session_node: dict[int, str | None] = {}
    for pid, node in node_of.items():
        sid = by_pid[pid].sid
        leader = by_pid.get(sid)
        if sid > 1 and (leader is None or leader.process.pid in node_of):
            session_node.setdefault(sid, node)
    for s in seen:
        if s.process.pid not in node_of and s.cluster is None and s.sid in session_node:
            node_of[s.process.pid] = session_node[s.sid]

    node_of.pop(os.getpid(), None)
    return [
        ClusterProcess(by_pid[pid].process, node, by_pid[pid].name) for pid, node in node_of.items()
    ]


def find_cluster_processes(cluster_id: str, node: str | None = None) -> list[psutil.Process]:
    """Live processes of one cluster, or of one of its nodes when ``node`` is given."""
    return [cp.process for cp in cluster_processes(cluster_id) if node is None or cp.node == node]


def live_daemons(processes: Iterable[ClusterProcess]) -> dict[str, set[str]]:
    """node name -> names of its running core daemons (``gcs_server``, ``raylet``)."""
    daemons: dict[str, set[str]] = {}
    for cp in processes:
        if cp.node is None or cp.name not in ("gcs_server", "raylet"):
            continue
        try:
            if cp.process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        daemons.setdefault(cp.node, set()).add(cp.name)
    return daemons


def terminate(processes: Iterable[psutil.Process], grace_seconds: float = 4.0) -> None:
    """SIGTERM, wait up to ``grace_seconds``, then SIGKILL whatever is left."""
    procs = [p for p in processes if p.pid != os.getpid()]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()  # psutil checks the pid was not reused since the scan
    _, alive = psutil.wait_procs(procs, timeout=grace_seconds)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2.0)


def runs_client_server(processes: Iterable[ClusterProcess]) -> bool:
    """Whether one of these processes is Ray Client's proxy server (the head's ``--mode=proxy``
    process, which Ray does not restart by itself when it dies)."""
    for cp in processes:
        try:
            cmdline = cp.process.cmdline()
        except psutil.Error:
            continue
        if "client-server" in cmdline and "--mode=proxy" in cmdline:
            return True
    return False
