"""``make demo``: the quickstart, end to end, on the embedded defaults.

Starts a real server (SQLite, local backend) in a throwaway RAYDECK_HOME, creates a cluster
(head + 2 workers with a custom resource), runs Ray tasks through ``raydeck://``, submits a
job with an uploaded working_dir, follows its logs, scales the pool, and deletes it all.
"""

from __future__ import annotations

import logging
import os
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import ray
from rich.console import Console
from rich.table import Table

from raydeck.client import RaydeckClient
from raydeck.core.models import Cluster, ClusterCreate, JobState
from raydeck.devtools import ServerProcess

T = TypeVar("T")
console = Console()
steps: list[tuple[str, float, str]] = []

TRAIN_SCRIPT = textwrap.dedent(
    """
    import ray, socket
    ray.init()

    @ray.remote(resources={"accel": 1})
    def square(x):
        return x * x, socket.gethostname()

    results = ray.get([square.remote(i) for i in range(8)])
    print("sum of squares:", sum(r[0] for r in results))
    print("ran on accel workers: ok")
    """
)


def step(title: str, action: Callable[[], T], describe: Callable[[T], str] = str) -> T:
    console.print(f"[bold cyan]→[/bold cyan] {title}")
    start = time.monotonic()
    result = action()
    elapsed = time.monotonic() - start
    detail = describe(result)
    steps.append((title, elapsed, detail))
    console.print(f"  [green]✓[/green] {detail} ({elapsed:.2f}s)", highlight=False)
    return result


def ray_client_roundtrip(cluster: str) -> str:
    ray.init(f"raydeck://{cluster}", logging_level=logging.ERROR)
    try:

        @ray.remote(resources={"accel": 1})
        def where() -> str:
            return str(ray.get_runtime_context().get_node_id())[:8]

        nodes = sorted(set(ray.get([where.remote() for _ in range(6)])))
        return f"6 tasks needing 'accel' ran on worker node(s) {', '.join(nodes)}"
    finally:
        ray.shutdown()


def run_quickstart(client: RaydeckClient) -> None:
    spec = ClusterCreate.model_validate(
        {
            "name": "demo",
            "worker_pools": [
                {"name": "accel", "replica_count": 2, "num_cpus": 1, "resources": {"accel": 1}}
            ],
            "labels": {"team": "demo"},
        }
    )
    step(
        "create cluster 'demo' (head + 2 workers)",
        lambda: client.clusters.create(spec),
        lambda c: f"{c.name} {c.state.value} (the API returns at once)",
    )
    step("wait until RUNNING", lambda: client.clusters.wait("demo"), lambda c: f"{c.dashboard_url}")
    step("ray.init('raydeck://demo') and run tasks", lambda: ray_client_roundtrip("demo"))

    workdir = Path(tempfile.mkdtemp(prefix="raydeck-job-"))
    (workdir / "train.py").write_text(TRAIN_SCRIPT)
    job = step(
        "submit a job with its working_dir",
        lambda: client.jobs.submit("demo", "python train.py", working_dir=workdir),
        lambda j: j.id,
    )
    step(
        "follow its logs",
        lambda: "".join(client.jobs.follow_logs(job.id)).strip(),
        lambda text: text.splitlines()[-2] if text else "(no output)",
    )
    done = step("job result", lambda: client.jobs.wait(job.id), lambda j: j.state.value)
    if done.state is not JobState.SUCCEEDED:
        raise SystemExit(f"demo job failed: {done.message}")

    def scale_down() -> Cluster:
        client.clusters.scale("demo", "accel", 1)
        return client.clusters.wait("demo")

    step(
        "scale pool 'accel' to 1",
        scale_down,
        lambda c: f"{c.worker_pools[0].current_replica_count} worker(s) running",
    )

    def delete() -> str:
        client.clusters.delete("demo")
        client.clusters.wait_deleted("demo")
        return "all of its processes stopped"

    step("delete the cluster", delete)


def main() -> None:
    home = Path(os.environ.get("RAYDECK_DEMO_HOME") or tempfile.mkdtemp(prefix="raydeck-demo-"))
    server = ServerProcess(home)
    step("start the control plane (SQLite, local backend)", server.start, lambda _: server.url)
    os.environ.update({"RAYDECK_SERVER": server.url, "RAYDECK_TOKEN": server.token})
    try:
        with RaydeckClient() as client:
            run_quickstart(client)
    finally:
        server.stop()
    table = Table(title="Raydeck demo", title_justify="left")
    for column in ("step", "seconds", "result"):
        table.add_column(column)
    for title, elapsed, detail in steps:
        table.add_row(title, f"{elapsed:.2f}", detail)
    console.print(table)
    console.print(f"server home: {home} (log: {server.log_path})")


if __name__ == "__main__":
    main()
