"""Clusters over three namespace hosts, each with a real agent running real `ray start`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raydeck.backends.local.processes import cluster_processes, live_daemons
from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError
from raydeck.core.models import ClusterCreate, ClusterState, JobState, WorkerPoolSpec
from tests.hosts.conftest import HEARTBEAT_TIMEOUT, HostsEnv
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NODE_IPS_SCRIPT = """
import json, ray
ray.init("raydeck://{cluster}")

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def where():
    import time
    time.sleep(0.5)  # busy long enough that Ray must use every node's CPU
    return ray.util.get_node_ip_address()

print(sorted({{n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}}))
print(json.dumps(sorted(set(ray.get([where.remote() for _ in range(16)], timeout=180)))))
"""


def _run_client(env: HostsEnv, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env.server.client_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result.stdout


def _host_of(env: HostsEnv, cluster: str, node: str) -> str:
    with env.client() as client:
        for host in client.hosts.list().items:
            if f"{cluster}/{node}" in host.nodes:
                return host.name
    raise AssertionError(f"{cluster}/{node} is on no host")


def _create(env: HostsEnv, name: str, replicas: int, **pool: object) -> None:
    with env.client() as client:
        client.clusters.create(
            ClusterCreate(
                name=name,
                backend="hosts",
                worker_pools=[
                    WorkerPoolSpec.model_validate({"name": "w", "replica_count": replicas, **pool})
                ],
            )
        )
        client.clusters.wait(name, timeout=300)


def _delete(env: HostsEnv, name: str) -> None:
    with env.client() as client:
        client.clusters.delete(name)
        client.clusters.wait_deleted(name, timeout=120)


def _raylets(marker: str) -> int:
    return sum(1 for cp in cluster_processes(marker) if cp.name == "raylet")


def test_cluster_spans_three_hosts_and_takes_jobs(hosts_env: HostsEnv) -> None:
    _create(hosts_env, "big", 3, num_cpus=1, placement="spread")
    try:
        with hosts_env.client() as client:
            cluster = client.clusters.get("big")
            hosts = {h.name: h for h in client.hosts.list().items}
        assert cluster.backend == "hosts" and cluster.state is ClusterState.RUNNING
        assert [p.current_replica_count for p in cluster.worker_pools] == [3]
        # spread: one worker per host
        workers = {_host_of(hosts_env, "big", f"w-{i}") for i in range(3)}
        assert workers == {"h1", "h2", "h3"}
        assert cluster.dashboard_url and cluster.dashboard_url.startswith("http://10.231.")
        assert sum(len(h.nodes) for h in hosts.values()) == 4

        # raydeck:// from outside the namespaces; tasks land on three different IPs.
        ips = _run_client(hosts_env, NODE_IPS_SCRIPT.format(cluster="big"))
        assert len(json.loads(ips.strip().splitlines()[-1])) == 3, ips

        # Ray Jobs through the control plane's proxy to the head's dashboard.
        with hosts_env.client() as client:
            job = client.jobs.submit("big", "python -c \"print('hello from hosts')\"")
            done = client.jobs.wait(job.id, timeout=180)
            assert done.state is JobState.SUCCEEDED, client.jobs.logs(job.id)
            assert "hello from hosts" in client.jobs.logs(job.id)

            # The agents ship their nodes' Ray log files: every host's lines arrive.
            def shipped() -> set[str]:
                entries = client.logs.query("cluster/big", page_size=1000).items
                return {e.source.partition("/")[0] for e in entries}

            wait_until(
                lambda: {"head", "w-0", "w-1", "w-2"} <= shipped(),
                "raylet logs of all 4 nodes",
                timeout=60,
                interval=1,
            )
    finally:
        _delete(hosts_env, "big")
    with hosts_env.client() as client:
        assert all(h.nodes == [] for h in client.hosts.list().items)


def test_a_pool_that_fits_no_host_fails_naming_the_shortfall(hosts_env: HostsEnv) -> None:
    with hosts_env.client() as client:
        # One replica bigger than any host: refused at create, nothing stored.
        with pytest.raises(InvalidArgumentError) as refused:
            client.clusters.create(
                ClusterCreate(
                    name="huge",
                    backend="hosts",
                    worker_pools=[WorkerPoolSpec(name="w", replica_count=1, num_cpus=64)],
                )
            )
        assert refused.value.field == "worker_pools[0]" and "64 CPU" in refused.value.message
        # Each replica fits a host, but not all of them at once: the cluster runs what fits
        # and names what it is short of, and why.
        client.clusters.create(
            ClusterCreate(
                name="huge",
                backend="hosts",
                worker_pools=[WorkerPoolSpec(name="w", replica_count=4, num_cpus=2)],
            )
        )
        try:

            def short() -> str | None:
                cluster = client.clusters.get("huge")
                running = cluster.state in (ClusterState.RUNNING, ClusterState.UPDATING)
                if running and cluster.worker_pools[0].current_replica_count == 2:
                    return cluster.state_reason
                return None

            message = wait_until(short, "huge running 2 of 4 workers", timeout=240, interval=1)
            assert "pool 'w' is 2 node(s) short" in message, message
            assert "each needs 2 CPU" in message and "free" in message
        finally:
            client.clusters.delete("huge")
            client.clusters.wait_deleted("huge", timeout=120)


def test_bad_join_token_is_refused(hosts_env: HostsEnv, tmp_path: Path) -> None:
    agent = hosts_env.agents["h1"]
    argv = [sys.executable, "-m", "raydeck", "node", "join", hosts_env.server.url]
    argv += ["--name", "intruder", "--data-dir", f"{tmp_path}/intruder", "--token", "rdj_nope"]
    result = subprocess.run(
        hosts_env.netns.exec_argv(agent.netns, argv), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "unauthenticated" in result.stderr + result.stdout
    with hosts_env.client() as client:
        assert "intruder" not in {h.name for h in client.hosts.list().items}


def test_restarted_agent_reattaches_and_a_lost_host_is_replaced(hosts_env: HostsEnv) -> None:
    _create(hosts_env, "ha", 2, num_cpus=1, placement="spread")
    try:
        with hosts_env.client() as client:
            before = {n.name: n.address for n in client.clusters.get("ha").nodes}
        head_host = _host_of(hosts_env, "ha", "head")
        worker_hosts = {_host_of(hosts_env, "ha", f"w-{i}") for i in range(2)}
        victim = sorted(worker_hosts - {head_host})[0]

        # kill -9 the agent alone and start it again: same nodes, no second copy.
        state_file = hosts_env.agents[victim].data_dir / "agent.json"
        markers = list(json.loads(state_file.read_text())["nodes"])
        assert markers and all(_raylets(m["id"]) == 1 for m in markers)
        hosts_env.kill_agent(victim)
        hosts_env.start_agent(victim)
        hosts_env.wait_ready([victim])
        with hosts_env.client() as client:
            wait_until(
                lambda: client.clusters.get("ha").state is ClusterState.RUNNING, "ha RUNNING"
            )
            assert {n.name: n.address for n in client.clusters.get("ha").nodes} == before
        assert all(_raylets(m["id"]) == 1 for m in markers)

        # The host loses power: agent and Ray processes gone.
        hosts_env.kill_agent(victim)
        hosts_env.netns.kill_all(hosts_env.agents[victim].netns)
        with hosts_env.client() as client:

            def replaced() -> bool:
                cluster = client.clusters.get("ha")
                return (
                    cluster.state is ClusterState.RUNNING
                    and all(n.alive for n in cluster.nodes)
                    and victim not in {_host_of(hosts_env, "ha", f"w-{i}") for i in range(2)}
                )

            wait_until(
                replaced,
                "workers replaced on other hosts",
                timeout=HEARTBEAT_TIMEOUT + 180,
                interval=1,
            )
            assert client.hosts.get(victim).state.value == "LOST"
        ips = _run_client(hosts_env, NODE_IPS_SCRIPT.format(cluster="ha"))
        assert hosts_env.netns.addresses[hosts_env.agents[victim].netns] not in ips

        # The host comes back: its agent forgets the dead nodes and takes work again.
        hosts_env.start_agent(victim)
        hosts_env.wait_ready([victim])
        with hosts_env.client() as client:
            wait_until(lambda: client.hosts.get(victim).nodes == [], f"{victim} empty")
    finally:
        _delete(hosts_env, "ha")
    for marker in markers:
        assert not live_daemons(cluster_processes(marker["id"]))


def _markers(env: HostsEnv) -> set[str]:
    found: set[str] = set()
    for agent in env.agents.values():
        state = agent.data_dir / "agent.json"
        if state.exists():
            found.update(node["id"] for node in json.loads(state.read_text())["nodes"])
    return found


def test_server_kill9_and_restart_reattaches_without_duplicates(hosts_env: HostsEnv) -> None:
    _create(hosts_env, "sr", 2, num_cpus=1)
    try:
        markers = _markers(hosts_env)
        assert len(markers) >= 3 and all(_raylets(m) == 1 for m in markers)
        with hosts_env.client() as client:
            before = client.clusters.get("sr").nodes
        hosts_env.server.kill9()
        hosts_env.server.start()
        with hosts_env.client() as client:
            client.clusters.wait("sr", timeout=120)
            assert client.clusters.get("sr").nodes == before
            hosts_env.wait_ready(list(hosts_env.agents))
            job = client.jobs.submit("sr", "python -c \"print('after restart')\"")
            assert client.jobs.wait(job.id, timeout=180).state is JobState.SUCCEEDED
        assert _markers(hosts_env) == markers and all(_raylets(m) == 1 for m in markers)
    finally:
        _delete(hosts_env, "sr")


def test_drain_moves_workers_and_delete_refuses_a_busy_host(hosts_env: HostsEnv) -> None:
    _create(hosts_env, "dr", 2, num_cpus=1, placement="spread")
    try:
        head_host = _host_of(hosts_env, "dr", "head")
        victim = next(
            _host_of(hosts_env, "dr", f"w-{i}")
            for i in range(2)
            if _host_of(hosts_env, "dr", f"w-{i}") != head_host
        )
        with hosts_env.client() as client:
            with pytest.raises(FailedPreconditionError, match="drain it first"):
                client.hosts.delete(victim)
            assert client.hosts.drain(victim).state.value == "DRAINING"

            def moved() -> bool:
                cluster = client.clusters.get("dr")
                return (
                    cluster.state is ClusterState.RUNNING
                    and cluster.worker_pools[0].current_replica_count == 2
                    and client.hosts.get(victim).nodes == []
                )

            wait_until(moved, f"workers moved off {victim}", timeout=180, interval=1)
            assert client.hosts.drain(victim, undo=True).state.value == "READY"
    finally:
        _delete(hosts_env, "dr")


def test_losing_the_heads_host_is_an_error_until_repaired(hosts_env: HostsEnv) -> None:
    _create(hosts_env, "rp", 1, num_cpus=1)
    victim = _host_of(hosts_env, "rp", "head")
    try:
        hosts_env.kill_agent(victim)
        hosts_env.netns.kill_all(hosts_env.agents[victim].netns)
        with hosts_env.client() as client:
            wait_until(
                lambda: client.clusters.get("rp").state is ClusterState.ERROR,
                "rp in ERROR",
                timeout=HEARTBEAT_TIMEOUT + 60,
                interval=0.5,
            )
            reason = client.clusters.get("rp").state_reason or ""
            assert f"host {victim} is lost" in reason and "repair" in reason
            client.clusters.repair("rp")
            client.clusters.wait("rp", timeout=300)
        assert _host_of(hosts_env, "rp", "head") != victim
        ips = json.loads(
            _run_client(hosts_env, NODE_IPS_SCRIPT.format(cluster="rp")).splitlines()[-1]
        )
        victim_ip = hosts_env.netns.addresses[hosts_env.agents[victim].netns]
        assert ips and victim_ip not in ips
    finally:
        hosts_env.start_agent(victim)
        hosts_env.wait_ready([victim])
        _delete(hosts_env, "rp")


def test_join_as_a_service_writes_a_unit_and_the_cli_manages_hosts(
    hosts_env: HostsEnv, tmp_path: Path
) -> None:
    agent = hosts_env.agents["h1"]
    unit = tmp_path / "raydeck-agent.service"
    argv = [sys.executable, "-m", "raydeck", "node", "join", hosts_env.server.url]
    argv += ["--token", hosts_env.join_token, "--name", "svc", "--data-dir", str(tmp_path / "svc")]
    argv += ["--service", "--unit-path", str(unit), "--num-cpus", "1"]
    joined = subprocess.run(
        hosts_env.netns.exec_argv(agent.netns, argv), capture_output=True, text=True, timeout=120
    )
    assert joined.returncode == 0, joined.stderr
    text = unit.read_text()
    assert "KillMode=process" in text and f"--data-dir {tmp_path / 'svc'}" in text
    assert "rdj_" not in text  # the unit re-attaches with the stored credential
    state = tmp_path / "svc" / "agent.json"
    assert state.stat().st_mode & 0o777 == 0o600

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "raydeck", *args],
            env=hosts_env.server.client_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = json.loads(cli("hosts", "list", "-o", "json"))
    assert {h["name"] for h in listed} == {"h1", "h2", "h3", "svc"}
    assert "svc deleted" in cli("hosts", "delete", "svc")
    assert "join token" in cli("hosts", "token", "create", "--expires-in-days", "0.5")
