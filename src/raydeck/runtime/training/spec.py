"""What one run (a CustomJob attempt or a tuning trial) is told, and the env it gives code."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pydantic import Field

from raydeck.core.models.common import LenientModel
from raydeck.core.models.training import MachineSpec, TrainingPoolSpec

__all__ = [
    "RunSpec",
    "aip_dirs",
    "cluster_spec",
    "pool_argv",
    "ray_options",
    "replica_env",
    "tf_config",
    "train_workers",
]

TF_TYPES = ("chief", "worker", "ps", "evaluator")


class RunSpec(LenientModel):
    job_id: str
    run_id: str  # whose metrics these are: the custom job, or the trial
    attempt: int = 0
    output_dir: str  # AIP_* directories live under it
    pools: list[TrainingPoolSpec]
    trial_id: str | None = None
    extra_args: list[str] = Field(default_factory=list)  # the trial's --name=value
    report_path: str | None = None  # control-plane route that takes metric points


def ray_options(machine: MachineSpec) -> dict[str, Any]:
    """What one replica reserves, as keyword arguments of a Ray task's or actor's ``options``."""
    options: dict[str, Any] = {"num_cpus": machine.cpus, "num_gpus": machine.gpus}
    if machine.memory:
        options["memory"] = machine.memory
    if machine.resources:
        options["resources"] = dict(machine.resources)
    return options


def aip_dirs(output_dir: str) -> dict[str, str]:
    return {
        "AIP_MODEL_DIR": os.path.join(output_dir, "model"),
        "AIP_CHECKPOINT_DIR": os.path.join(output_dir, "checkpoints"),
        "AIP_TENSORBOARD_LOG_DIR": os.path.join(output_dir, "logs"),
    }


def replica_name(pool: int, index: int) -> str:
    return f"workerpool{pool}-{index}"


def cluster_spec(
    run: RunSpec, addresses: dict[int, list[str]], pool: int, index: int
) -> dict[str, Any]:
    """The reference platform's CLUSTER_SPEC: pools by name, this task, the trial."""
    task: dict[str, Any] = {"type": f"workerpool{pool}", "index": index}
    if run.trial_id:
        task["trial"] = run.trial_id
    return {
        "cluster": {f"workerpool{p}": list(a) for p, a in sorted(addresses.items())},
        "environment": "cloud",
        "task": task,
        "job": {"id": run.job_id, "attempt": run.attempt},
    }


def tf_config(addresses: dict[int, list[str]], pool: int, index: int) -> dict[str, Any]:
    """TF_CONFIG: pool 0 is the chief, then worker, ps and evaluator, as the platform maps them."""
    cluster = {TF_TYPES[p]: list(a) for p, a in sorted(addresses.items()) if p < len(TF_TYPES)}
    kind = TF_TYPES[pool] if pool < len(TF_TYPES) else f"workerpool{pool}"
    return {"cluster": cluster, "task": {"type": kind, "index": index}, "environment": "cloud"}


def train_workers(pools: list[TrainingPoolSpec]) -> dict[str, Any]:
    """Codeless pools are Ray Train worker pools: how many workers and what each reserves."""
    workers = [p for p in pools[1:] if not p.has_program]
    if not workers:
        return {"num_workers": 0, "resources_per_worker": {}}
    first = workers[0].machine_spec
    return {
        "num_workers": sum(p.replica_count for p in workers),
        "resources_per_worker": first.ray_resources(),
        "use_gpu": first.gpus > 0,
    }


def pool_argv(pool: TrainingPoolSpec, extra_args: list[str]) -> tuple[list[str], str | None]:
    """argv and working directory of a pool's process."""
    args = [*pool.args, *extra_args]
    cwd = pool.working_dir
    if pool.python_module is not None:
        cwd = cwd or pool.python_module.package_dir
        return [sys.executable, "-m", pool.python_module.module_name, *args], cwd
    if pool.script is not None:
        path = pool.script.path
        cwd = cwd or os.path.dirname(path)
        head = [sys.executable, path] if path.endswith(".py") else [path]
        return [*head, *args], cwd
    assert pool.command is not None
    return [*pool.command, *args], cwd


def replica_env(
    run: RunSpec,
    addresses: dict[int, list[str]],
    pool_index: int,
    index: int,
    gcs_address: str | None,
) -> dict[str, str]:
    pool = run.pools[pool_index]
    name = replica_name(pool_index, index)
    env = {
        **aip_dirs(run.output_dir),
        "CLUSTER_SPEC": json.dumps(cluster_spec(run, addresses, pool_index, index)),
        "TF_CONFIG": json.dumps(tf_config(addresses, pool_index, index)),
        "CLOUD_ML_HP_METRIC_FILE": os.path.join(run.output_dir, "metrics", f"{name}.metrics"),
        "RAYDECK_JOB_ID": run.job_id,
        "RAYDECK_RUN_ID": run.run_id,
        "RAYDECK_ATTEMPT": str(run.attempt),
        "RAYDECK_REPLICA": name,
        "RAYDECK_TRAIN_WORKERS": json.dumps(train_workers(run.pools)),
        "PYTHONUNBUFFERED": "1",
    }
    if run.trial_id:
        env["CLOUD_ML_TRIAL_ID"] = run.trial_id
        env["AIP_TRIAL_ID"] = run.trial_id
    if gcs_address:
        env["RAY_ADDRESS"] = gcs_address  # Ray Train inside the job uses this cluster
    paths = [
        p
        for p in (pool.python_module.package_dir if pool.python_module else None, pool.working_dir)
        if p
    ]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    env.update(pool.env)  # what the user set wins
    return env
