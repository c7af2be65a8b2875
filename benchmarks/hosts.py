"""The `hosts` group: Raydeck over 3 network-namespace hosts (a bridge, a server on it, a real
agent in each namespace), against the same `ray start` commands run by hand in the same
namespaces in the same run.

- create→RUNNING of head + 4 workers spread over the 3 hosts, vs raw `ray start`s (≤ 1.2×);
- predict throughput of an endpoint with 1 replica on each of 2 hosts vs 1 replica (≥ 1.6×;
  on one 2-core box the namespaces share the same cores, which bounds this);
- seconds from a worker host's loss (agent and Ray killed) to its pool back at full count
  (includes the heartbeat timeout, 6 s here).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sklearn.ensemble import RandomForestClassifier

from benchmarks.raw_ray import RAY, RawCluster
from benchmarks.report import Figure
from benchmarks.serving import _throughput, _train
from raydeck.client import RaydeckClient
from raydeck.core.errors import NotFoundError
from raydeck.core.models import ClusterCreate, ClusterState, WorkerPoolSpec
from raydeck.devtools import NetnsHosts, ServerProcess, netns_unavailable_reason

__all__ = ["bench_hosts"]

TAG = 15
ROUNDS = 2
HEARTBEAT_TIMEOUT = 6.0
RAW_BASE_PORT = 40000  # outside the server's 21000-29999 used below


class RawNetnsCluster(RawCluster):
    """Head on the first namespace, workers round-robin over all of them, by hand."""

    def __init__(self, netns: NetnsHosts, workers: int) -> None:
        super().__init__(RAW_BASE_PORT, workers=workers)
        self.netns = netns
        self.head_ip = netns.addresses[netns.names[0]]

    def _run_in(self, name: str, args: list[str]) -> None:
        done = subprocess.run(
            self.netns.exec_argv(name, [RAY, "start", *args]),
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"raw ray start failed: {(done.stderr or done.stdout)[-1500:]}")

    def start(self) -> float:
        begin = time.monotonic()
        gcs = f"{self.head_ip}:{self.base + 7}"
        self._run_in(
            self.netns.names[0],
            [
                "--head",
                f"--node-ip-address={self.head_ip}",
                f"--port={self.base + 7}",
                f"--dashboard-host={self.head_ip}",
                f"--dashboard-port={self.base + 8}",
                f"--ray-client-server-port={self.base + 9}",
                f"--temp-dir={self.temp_dir}",
                "--num-cpus=1",
                "--disable-usage-stats",
                *self._node_ports(0),
            ],
        )
        jobs = []
        for i in range(1, self.workers + 1):
            name = self.netns.names[i % len(self.netns.names)]
            args = [
                f"--address={gcs}",
                f"--node-ip-address={self.netns.addresses[name]}",
                f"--temp-dir={self.temp_dir}/w{i}",  # as the agents do: one per node
                "--num-cpus=1",
                "--disable-usage-stats",
                *self._node_ports(i),
            ]
            jobs.append((name, args))
        with ThreadPoolExecutor(len(jobs)) as pool:
            list(pool.map(lambda job: self._run_in(*job), jobs))
        return time.monotonic() - begin


def _agent(
    netns: NetnsHosts, server: ServerProcess, token: str, i: int, root: Path
) -> subprocess.Popen[bytes]:
    name = netns.names[i]
    argv = [sys.executable, "-m", "raydeck", "node", "join", server.url, "--token", token]
    argv += ["--name", f"h{i + 1}", "--data-dir", str(root / f"h{i + 1}"), "--num-cpus", "2"]
    log = (root / f"h{i + 1}.log").open("ab")
    return subprocess.Popen(
        netns.exec_argv(name, argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(check: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _create(client: RaydeckClient, name: str, replicas: int, cpus: float) -> float:
    begin = time.monotonic()
    client.clusters.create(
        ClusterCreate(
            name=name,
            backend="hosts",
            worker_pools=[
                WorkerPoolSpec(name="w", replica_count=replicas, num_cpus=cpus, placement="spread")
            ],
        )
    )
    client.clusters.wait(name, timeout=300, poll=0.05)
    return time.monotonic() - begin


def _exists(client: RaydeckClient, endpoint: str) -> bool:
    try:
        client.endpoints.get(endpoint)
    except NotFoundError:
        return False
    return True


def _delete(client: RaydeckClient, name: str) -> None:
    client.clusters.delete(name)
    client.clusters.wait_deleted(name, timeout=180)


def _bench_create(client: RaydeckClient, netns: NetnsHosts) -> list[Figure]:
    raw_times, ours = [], []
    for round_index in range(ROUNDS):
        raw = RawNetnsCluster(netns, workers=4)
        try:
            raw_times.append(raw.start())
        except RuntimeError as exc:
            print(f"  raw round failed: {str(exc).splitlines()[-1][:160]}")
        finally:
            raw.stop()
        name = f"hosts-create-{round_index}"
        ours.append(_create(client, name, 4, 1))
        _delete(client, name)
        print(
            f"  round {round_index}: raw {raw_times[-1] if raw_times else 0:.2f}s, "
            f"raydeck {ours[-1]:.2f}s"
        )
    raw_median = statistics.median(raw_times) if raw_times else None
    return [
        Figure(
            "hosts: create→RUNNING, head + 4 workers on 3 hosts (median)",
            "s",
            statistics.median(ours),
            raw_median,
            1.2,
        )
    ]


def _bench_throughput(client: RaydeckClient, token: str, work: Path) -> list[Figure]:
    forest = _train(work / "forest", RandomForestClassifier(n_estimators=100, random_state=0))
    client.models.upload("hosts-forest", forest, "sklearn")
    _create(client, "hosts-serve", 2, 2)  # each worker takes a whole 2-CPU host
    headers = {"Authorization": f"Bearer {token}"}
    rates = {}
    try:
        for replicas in (1, 2):
            name = f"hosts-forest-{replicas}"
            client.endpoints.create(name, cluster="hosts-serve")
            client.endpoints.deploy(name, "hosts-forest", num_cpus=2, min_replica_count=replicas)
            _wait(lambda n=name: client.endpoints.wait(n, timeout=300).predict_url, name, 300)
            url = f"{client.endpoints.get(name).predict_url}/predict"
            _throughput(url, headers)  # warm-up
            rates[replicas] = statistics.median(_throughput(url, headers) for _ in range(3))
            print(f"  {replicas} replica(s): {rates[replicas]:.0f} predictions/s")
            client.endpoints.delete(name)
            _wait(lambda n=name: not _exists(client, n), f"{name} deleted", 120)
    finally:
        _delete(client, "hosts-serve")
    return [
        Figure(
            "hosts: predict throughput, 1 replica on each of 2 hosts vs 1 replica",
            "req/s",
            rates[2],
            rates[1],
            1.6,
            higher_is_better=True,
        )
    ]


def _bench_host_loss(
    client: RaydeckClient, netns: NetnsHosts, agents: list[subprocess.Popen[bytes]]
) -> list[Figure]:
    _create(client, "hosts-loss", 2, 1)
    try:
        hosts = client.hosts.list().items
        head_host = next(h.name for h in hosts if "hosts-loss/head" in h.nodes)
        victim = next(
            h.name
            for h in hosts
            if h.name != head_host and any("hosts-loss/w" in n for n in h.nodes)
        )
        index = int(victim[1:]) - 1
        agents[index].kill()
        netns.kill_all(netns.names[index])
        begin = time.monotonic()

        def back() -> bool:
            cluster = client.clusters.get("hosts-loss")
            placed = {n for h in client.hosts.list().items if h.name != victim for n in h.nodes}
            return (
                cluster.state is ClusterState.RUNNING
                and cluster.worker_pools[0].current_replica_count == 2
                and {"hosts-loss/w-0", "hosts-loss/w-1"} <= placed
            )

        _wait(back, "the pool back at 2 replicas", 300)
        seconds = time.monotonic() - begin
        print(f"  host loss → pool back at full count: {seconds:.1f}s")
    finally:
        _delete(client, "hosts-loss")
    return [
        Figure(
            f"hosts: worker host lost → pool back at full count (heartbeat timeout "
            f"{HEARTBEAT_TIMEOUT:.0f}s)",
            "s",
            seconds,
            None,
            None,
            absolute=True,
        )
    ]


def bench_hosts() -> list[Figure]:
    reason = netns_unavailable_reason()
    if reason:
        print(f"  skipped: {reason}")
        return []
    work = Path(tempfile.mkdtemp(prefix="raydeck-bench-hosts-"))
    netns = NetnsHosts(TAG, 3, subnet=f"10.231.{TAG}")
    server: ServerProcess | None = None
    agents: list[subprocess.Popen[bytes]] = []
    figures: list[Figure] = []
    try:
        netns.create()
        server = ServerProcess(
            work / "home",
            host=netns.bridge_ip,
            env={
                "RAYDECK_RECONCILE_INTERVAL": "0.2",
                "RAYDECK_HOST_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "RAYDECK_HOST_POLL_INTERVAL": "0.5",
                "RAYDECK_PORT_RANGE_START": "21000",
                "RAYDECK_PORT_RANGE_END": "29999",
            },
        )
        server.start()
        with RaydeckClient(server.url, server.token, timeout=120) as client:
            token = client.hosts.create_join_token().secret
            agents = [_agent(netns, server, token, i, work) for i in range(3)]
            _wait(
                lambda: sum(h.state.value == "READY" for h in client.hosts.list().items) == 3,
                "3 hosts READY",
                120,
            )
            figures += _bench_create(client, netns)
            figures += _bench_host_loss(client, netns, agents)
            lost = next(i for i, agent in enumerate(agents) if agent.poll() is not None)
            agents[lost] = _agent(netns, server, token, lost, work)  # the host comes back
            _wait(
                lambda: sum(h.state.value == "READY" for h in client.hosts.list().items) == 3,
                "the lost host READY again",
                120,
            )
            try:
                figures += _bench_throughput(client, server.token, work)
            except Exception as exc:  # reported, not fatal: the other figures stand
                print(f"  throughput figure failed: {exc}")
    finally:
        for agent in agents:
            agent.kill()
        netns.close()
        if server is not None:
            server.stop()
    return figures
