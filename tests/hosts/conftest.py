"""A real server on a bridge and a real `raydeck node join` agent in each of 3 namespaces.

One per session (the namespaces, server and agents take a few seconds; clusters on them are
created by each test and deleted again). Skipped, with the reason, where namespaces cannot
be made (not root, no iproute2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raydeck.client import RaydeckClient
from raydeck.devtools import ServerProcess
from raydeck.devtools.netns import NetnsHosts, netns_unavailable_reason
from tests.waiting import wait_until

TAG = int(os.environ.get("RAYDECK_TEST_NETNS_TAG", "14"))
HEARTBEAT_TIMEOUT = 6.0


@dataclass
class Agent:
    name: str  # host name == index into the namespaces
    netns: str
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}-agent.log"


@dataclass
class HostsEnv:
    netns: NetnsHosts
    server: ServerProcess
    join_token: str
    agents: dict[str, Agent] = field(default_factory=dict)

    def client(self) -> RaydeckClient:
        return RaydeckClient(self.server.url, self.server.token, timeout=120)

    def join_argv(self, agent: Agent, token: str | None, *extra: str) -> list[str]:
        argv = [sys.executable, "-m", "raydeck", "node", "join", self.server.url]
        argv += ["--name", agent.name, "--data-dir", str(agent.data_dir), *extra]
        if token:
            argv += ["--token", token]
        return self.netns.exec_argv(agent.netns, argv)

    def start_agent(
        self, name: str, *, token: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        agent = self.agents[name]
        log = agent.log.open("ab")
        agent.process = subprocess.Popen(
            self.join_argv(agent, token, *extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=agent_env(),
            start_new_session=True,
        )

    def kill_agent(self, name: str) -> None:
        """kill -9 the agent alone; its Ray processes keep running."""
        agent = self.agents[name]
        if agent.process is not None:
            agent.process.kill()
            agent.process.wait()
            agent.process = None

    def wait_ready(self, names: list[str], timeout: float = 60) -> None:
        def ready() -> bool:
            with self.client() as client:
                hosts = {h.name: h.state.value for h in client.hosts.list().items}
            return all(hosts.get(n) == "READY" for n in names)

        wait_until(ready, f"hosts {names} READY", timeout=timeout, interval=0.5)


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYDECK_"))}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def hosts_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsEnv]:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"hosts tests need Linux network namespaces: {reason}")
    root = tmp_path_factory.mktemp("hosts")
    netns = NetnsHosts(TAG, 3, subnet=f"10.231.{TAG}")
    server: ServerProcess | None = None
    env: HostsEnv | None = None
    try:
        netns.create()
        server = ServerProcess(
            root / "server-home",
            host=netns.bridge_ip,
            env={
                "RAYDECK_RECONCILE_INTERVAL": "0.5",
                "RAYDECK_HOST_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "RAYDECK_HOST_POLL_INTERVAL": "0.5",
                "RAYDECK_PORT_RANGE_START": "21000",
                "RAYDECK_PORT_RANGE_END": "29999",
            },
        )
        server.start()
        with RaydeckClient(server.url, server.token) as client:
            token = client.hosts.create_join_token(expires_in_days=1).secret
        env = HostsEnv(netns, server, token)
        for i, ns in enumerate(netns.names, start=1):
            name = f"h{i}"
            env.agents[name] = Agent(name, ns, root / name)
            env.start_agent(
                name,
                token=token,
                extra=("--num-cpus", "2", "--resource", f"{name}=1", "--label", f"zone=z{i}"),
            )
        env.wait_ready(list(env.agents))
        yield env
    finally:
        if env is not None:
            for name in env.agents:
                env.kill_agent(name)
        netns.close()  # kills every Ray process left in the namespaces
        if server is not None:
            server.stop()
