"""Hosts on one box: Linux network namespaces joined by a bridge (needs root and `ip`).

``NetnsHosts`` makes a bridge ``rdkbr<n>`` holding ``<subnet>.1`` and one namespace
``rdk<n>h<i>`` per host at ``<subnet>.1<i>`` (veth pair, loopback up, no default route: the
namespaces reach each other and the bridge address, nothing else). ``close`` kills every
process still in a namespace and removes namespaces, veths and the bridge, also after a
failed test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

__all__ = ["NetnsHosts", "netns_unavailable_reason"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable_reason() -> str | None:
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = "rdkprobe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class NetnsHosts:
    def __init__(self, tag: int, count: int, subnet: str = "10.231.14") -> None:
        self.tag = tag
        self.subnet = subnet
        self.bridge = f"rdkbr{tag}"
        self.bridge_ip = f"{subnet}.1"
        self.names = [f"rdk{tag}h{i}" for i in range(1, count + 1)]
        self.addresses = {n: f"{subnet}.{10 + i}" for i, n in enumerate(self.names, start=1)}

    def create(self) -> None:
        self.close()  # leftovers of an earlier, killed run
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names, start=1):
            outside, inside = f"rdk{self.tag}v{i}", f"rdk{self.tag}p{i}"
            _ip("netns", "add", name)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", name)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", name, "addr", "add", f"{self.addresses[name]}/24", "dev", inside)
            _ip("-n", name, "link", "set", inside, "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def exec_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", name, *argv]

    def pids(self, name: str) -> list[int]:
        result = _ip("netns", "pids", name, check=False)
        return [int(p) for p in result.stdout.split()]

    def kill_all(self, name: str) -> None:
        """kill -9 everything in one namespace (a host losing power)."""
        for pid in self.pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        for i, name in enumerate(self.names, start=1):
            self.kill_all(name)
            _ip("netns", "del", name, check=False)
            _ip("link", "del", f"rdk{self.tag}v{i}", check=False)
        _ip("link", "del", self.bridge, check=False)
