"""The README works as written: its ``bash`` and ``python`` blocks run in order, from a copy of
the repository root, against a fresh home, a real ``raydeck server`` (started by the README's
own first block) and the real cluster the README creates (head + 2 × 1-CPU workers).

Blocks marked ``<!-- doctest: skip (why) -->`` are listed in the output and not run; blocks
marked ``<!-- doctest: file … -->`` must equal that file of the repository (see
tests/readme_blocks.py). The run shares nothing with other tests: its own home, server port
and Ray port range; whatever it leaves (a failed block before ``clusters delete``) is deleted
through the API, then the server and any leftover Ray process of its clusters are killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydeck.backends.local import find_cluster_processes
from raydeck.client import RaydeckClient
from raydeck.devtools import free_port
from tests.readme_blocks import README, RUNNABLE, Block, readme_blocks

REPO = README.parent
BLOCK_TIMEOUT = 900  # seconds; a block that hangs (work that never fits) fails the test
SURPRISES = ("Traceback", "-/predict", "Version check returned", "Running upgrade")


def test_every_block_is_run_skipped_with_a_reason_or_a_file_of_the_repo() -> None:
    """Fast and Ray-free: the markers are well formed and ``file`` blocks match the files."""
    blocks = readme_blocks()
    assert blocks, "no code blocks found in the README"
    for block in blocks:
        if block.action == "skip":
            assert block.argument, f"{block.describe()}: a skip needs a reason"
        elif block.action == "file":
            path = REPO / block.argument
            assert path.is_file(), f"{block.describe()}: {block.argument} does not exist"
            assert path.read_text() == block.code, f"{block.argument} differs from its block"
        else:
            assert block.language in RUNNABLE, (
                f"{block.describe()}: a {block.language} block must be marked "
                "<!-- doctest: file … --> or <!-- doctest: skip (why) -->"
            )


class ReadmeRun:
    """One fresh home and working directory; runs blocks like a user at a shell would."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.workdir = root / "repo"
        self.workdir.mkdir()
        shutil.copytree(REPO / "examples", self.workdir / "examples")
        port_start = int(os.environ.get("RAYDECK_TEST_PORT_START", "20000")) + 15000
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAYDECK_", "RAY_"))},
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "RAYDECK_HOME": str(self.home),
            "RAYDECK_PORT": str(free_port()),
            "RAYDECK_PORT_RANGE_START": str(port_start),
            "RAYDECK_RECONCILE_INTERVAL": "0.5",
            # The README walks a laptop user through it: Ray as the user's own OS user, reading
            # and writing the working directory (tests/e2e/test_isolation.py covers root's
            # per-cluster OS users, which cannot enter pytest's 0700 temp dirs).
            "RAYDECK_RAY_OS_USER": "off",
            "COLUMNS": "160",
        }
        self.sessions: list[int] = []  # process groups of bash blocks (background servers)

    def run(self, block: Block) -> str:
        if block.language == "bash":
            argv = ["bash", "-euo", "pipefail", "-c", block.code]
        else:
            argv = [sys.executable, "-c", block.code]
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.sessions.append(process.pid)
        try:
            output, _ = process.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"{block.describe()} still running after {BLOCK_TIMEOUT}s:\n{output}")
        seconds = time.monotonic() - started
        if process.returncode != 0:
            pytest.fail(
                f"{block.describe()} failed (exit {process.returncode}) after {seconds:.0f}s:\n"
                f"{output[-6000:]}"
            )
        print(f"\n--- {block.describe()} ({seconds:.1f}s)\n{output[-3000:]}")
        for surprise in SURPRISES:  # things a new user tripped over once
            assert surprise not in output, f"{block.describe()} printed {surprise!r}:\n{output}"
        return output

    def client(self) -> RaydeckClient | None:
        try:
            info = json.loads((self.home / "server.json").read_text())
            token = json.loads((self.home / "credentials").read_text())["token"]
        except (OSError, ValueError, KeyError):
            return None
        return RaydeckClient(info["url"], token, timeout=60)

    def clean_up(self) -> None:
        """Delete what the README left, stop its server, kill stray processes by id."""
        cluster_ids: set[str] = {d.name for d in (self.home / "clusters").glob("*")}
        client = self.client()
        if client is not None:
            with client:
                try:
                    left = client.clusters.list(page_size=1000).items
                    cluster_ids.update(c.id for c in left)
                    for cluster in left:
                        client.clusters.delete(cluster.name)
                    for cluster in left:
                        client.clusters.wait_deleted(cluster.name, timeout=180)
                except Exception as exc:  # the server may be what failed: kill below
                    print(f"README clean-up through the API failed: {exc}")
        try:
            pid = int(json.loads((self.home / "server.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pid = 0
        if pid:
            _stop(pid)
        for session in self.sessions:
            _kill_group(session)
        for cluster_id in cluster_ids:
            for proc in find_cluster_processes(cluster_id):
                proc.kill()


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def readme_run(tmp_path: Path) -> Iterator[ReadmeRun]:
    run = ReadmeRun(tmp_path)
    try:
        yield run
    finally:
        run.clean_up()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_runs_as_written(readme_run: ReadmeRun) -> None:
    blocks = readme_blocks()
    skipped = [b for b in blocks if b.action == "skip"]
    for block in skipped:
        print(f"\nskipped {block.describe()}: {block.argument}")
    for block in blocks:
        if block.action == "run":
            readme_run.run(block)
    client = readme_run.client()
    assert client is not None
    with client:
        assert client.clusters.list().items == []  # the README ends by deleting its cluster
        # every job and batch prediction it started ended well (a failed one is a surprise)
        jobs = client.jobs.list(page_size=1000).items
        assert {j.state.value for j in jobs} == {"SUCCEEDED"}, [
            (j.id, j.entrypoint, j.state.value, j.message) for j in jobs
        ]
        batches = client.batch_predictions.list(page_size=1000).items
        assert len(batches) == 2 and {b.state.value for b in batches} == {"SUCCEEDED"}
