"""The raw-Ray baselines, written the way a user would without Raydeck."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from ray.job_submission import JobStatus, JobSubmissionClient

__all__ = ["RawCluster"]

RAY = str(Path(sys.executable).with_name("ray"))


class RawCluster:
    """Head + N workers with plain `ray start`, each node on its own ports, token auth on."""

    def __init__(self, base_port: int, workers: int = 2, head_cpus: int = 1) -> None:
        self.base = base_port
        self.workers = workers
        self.head_cpus = head_cpus
        self.token = secrets.token_hex(32)
        self.temp_dir = tempfile.mkdtemp(prefix="rawray-", dir="/tmp")
        self.marker = f"rawbench-{secrets.token_hex(4)}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAW_BENCH_MARKER": self.marker,
        }

    def _node_ports(self, index: int) -> list[str]:
        base = self.base + 100 * index
        return [
            f"--node-manager-port={base + 1}",
            f"--object-manager-port={base + 2}",
            f"--dashboard-agent-listen-port={base + 3}",
            f"--dashboard-agent-grpc-port={base + 4}",
            f"--metrics-export-port={base + 5}",
            f"--runtime-env-agent-port={base + 6}",
            f"--min-worker-port={base + 20}",
            f"--max-worker-port={base + 99}",
        ]

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.base + 7}"

    @property
    def serve_port(self) -> int:
        """Free in every node's block: node ports are base+1..9, worker ports base+20..99."""
        return self.base + 10

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.base + 8}"

    def _run(self, args: list[str]) -> None:
        done = subprocess.run([RAY, "start", *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"raw ray start failed: {(done.stderr or done.stdout)[-1500:]}")

    def start(self) -> float:
        """Seconds from the first `ray start` until every node is up."""
        begin = time.monotonic()
        self._run(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.base + 7}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.base + 8}",
                f"--ray-client-server-port={self.base + 9}",
                f"--temp-dir={self.temp_dir}",
                f"--num-cpus={self.head_cpus}",
                "--disable-usage-stats",
                *self._node_ports(0),
            ]
        )
        worker_args = [
            [
                f"--address={self.gcs}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                '--resources={"accel": 1}',
                "--disable-usage-stats",
                *self._node_ports(i),
            ]
            for i in range(1, self.workers + 1)
        ]
        if worker_args:  # at once, as Raydeck does, so the baseline is the fastest raw way
            with ThreadPoolExecutor(len(worker_args)) as pool:
                list(pool.map(self._run, worker_args))
        return time.monotonic() - begin

    def jobs(self) -> JobSubmissionClient:
        return JobSubmissionClient(
            self.dashboard, headers={"Authorization": f"Bearer {self.token}"}
        )

    def submit_and_wait(self, client: JobSubmissionClient, entrypoint: str) -> float:
        begin = time.monotonic()
        submission = client.submit_job(entrypoint=entrypoint)
        while client.get_job_status(submission) not in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
        ):
            time.sleep(0.02)
        return time.monotonic() - begin

    def stop(self) -> None:
        """Kill exactly this cluster's processes (marked through the environment)."""
        mine: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                marked = proc.environ().get("RAW_BENCH_MARKER") == self.marker
                if marked or self.temp_dir in " ".join(proc.cmdline()):
                    mine[proc.pid] = proc
                    # Agents rename themselves and hide their environment: take children too.
                    mine.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.Error:
                continue
        for proc in mine.values():
            try:
                proc.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(list(mine.values()), timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
