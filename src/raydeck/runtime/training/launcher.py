"""Runs one CustomJob attempt (the Ray job's driver) or one tuning trial (a Ray task).

``execute`` is the same for both: the chief (pool 0) runs in this process; every replica of
the other pools with a program runs in a Ray actor reserved by one placement group (so a
job starts only once all its replicas fit: until then it waits, and the control plane shows
it QUEUED); codeless pools are Ray Train workers, checked for capacity and then left to the
chief's trainer. Each replica gets its address in CLUSTER_SPEC/TF_CONFIG, which is why the
actors are created first and asked for an address before any process starts.

    python -m raydeck.runtime.training.launcher --spec /path/run.json --status /path/status.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raydeck.runtime.training.replicas import (
    ReplicaLaunch,
    ReplicaProcess,
    ReplicaResult,
    free_port,
    node_ip,
)
from raydeck.runtime.training.spec import (
    RunSpec,
    pool_argv,
    ray_options,
    replica_env,
    replica_name,
)

__all__ = ["ReplicaActor", "RunOutcome", "execute", "execute_remote", "main", "write_status"]

StatusCallback = Callable[[str, str | None, list[dict[str, Any]] | None], None]
WORKER_GRACE_SECONDS = 10.0


class RunOutcome(dict[str, Any]):
    """{"ok": bool, "stopped": bool, "message": str|None} (a dict: it crosses Ray)."""


@ray.remote(max_concurrency=2)  # type: ignore[call-overload]
class ReplicaActor:
    def __init__(self) -> None:
        self._process: ReplicaProcess | None = None
        self._stopped = False

    def address(self) -> str:
        return f"{node_ip()}:{free_port()}"

    def run(self, launch: ReplicaLaunch) -> ReplicaResult:
        self._process = ReplicaProcess(launch)
        if self._stopped:
            self._process.stop()
        return self._process.run()

    def stop(self) -> None:
        self._stopped = True
        if self._process is not None:
            self._process.stop()


def _log_dir(run: RunSpec) -> str:
    return os.path.join(run.output_dir, "replica_logs")


def _check_chief_module(run: RunSpec) -> str | None:
    """A module that cannot be found: say so plainly instead of a Python traceback."""
    chief = run.pools[0]
    if chief.python_module is None:
        return None
    paths = [p for p in (chief.python_module.package_dir, chief.working_dir) if p]
    for path in paths:
        if not os.path.isdir(path):
            return f"workerpool0: package_dir/working_dir {path!r} does not exist"
    sys.path[:0] = paths
    try:
        found = importlib.util.find_spec(chief.python_module.module_name) is not None
    except (ImportError, ValueError):
        found = False
    finally:
        del sys.path[: len(paths)]
    if not found:
        where = f" in {', '.join(paths)}" if paths else ""
        return f"workerpool0: module {chief.python_module.module_name!r} not found{where}"
    return None


def execute(run: RunSpec, status: StatusCallback | None = None) -> RunOutcome:
    say = status or (lambda phase, message, replicas: None)
    problem = _check_chief_module(run)
    if problem:
        return RunOutcome(ok=False, stopped=False, message=problem)
    coded = [
        (p, i)
        for p, pool in enumerate(run.pools[1:], 1)
        if pool.has_program
        for i in range(pool.replica_count)
    ]
    codeless = [
        run.pools[p].machine_spec.ray_resources()
        for p, pool in enumerate(run.pools[1:], 1)
        if not pool.has_program
        for _ in range(pool.replica_count)
    ]
    groups = []
    try:
        run_pg: Any = None
        if coded:
            bundles = [
                run.pools[p].machine_spec.ray_resources() or {"CPU": 0.001} for p, _ in coded
            ]
            run_pg = placement_group(bundles, strategy="PACK")
            groups.append(run_pg)
        probe_pg = placement_group(codeless, strategy="PACK") if codeless else None
        if probe_pg is not None:
            groups.append(probe_pg)
        _wait_for(groups, coded, codeless, say)
        if probe_pg is not None:  # capacity is there: hand it to the chief's Ray Train trainer
            remove_placement_group(probe_pg)
            groups.remove(probe_pg)
        actors = [
            ReplicaActor.options(  # type: ignore[attr-defined]
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    run_pg, placement_group_bundle_index=k
                ),
                # The bundle holds the reservation; the actor claims it so nothing else takes it.
                **ray_options(run.pools[p].machine_spec),
            ).remote()
            for k, (p, _) in enumerate(coded)
        ]
        addresses: dict[int, list[str]] = {0: [f"{node_ip()}:{free_port()}"]}
        for (p, _), address in zip(
            coded, ray.get([a.address.remote() for a in actors]), strict=True
        ):
            addresses.setdefault(p, []).append(address)
        gcs = _gcs_address()
        launches = {(p, i): _launch(run, addresses, p, i, gcs) for p, i in [(0, 0), *coded]}
        refs = {
            actor.run.remote(launches[key]): key for actor, key in zip(actors, coded, strict=True)
        }
        say(
            "running",
            None,
            [
                {"pool": p, "index": i, "name": launch.name, "log_path": launch.log_path}
                for (p, i), launch in launches.items()
            ],
        )
        return _supervise(ReplicaProcess(launches[(0, 0)]), actors, refs)
    finally:
        for group in groups:
            remove_placement_group(group)


def _gcs_address() -> str | None:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return os.environ.get("RAY_ADDRESS")


def _launch(
    run: RunSpec, addresses: dict[int, list[str]], p: int, i: int, gcs: str | None
) -> ReplicaLaunch:
    argv, cwd = pool_argv(run.pools[p], run.extra_args)
    name = replica_name(p, i)
    return ReplicaLaunch(
        name=name,
        argv=argv,
        env=replica_env(run, addresses, p, i, gcs),
        cwd=cwd,
        log_path=os.path.join(_log_dir(run), f"{name}.log"),
        report_path=run.report_path if p == 0 else None,
        echo=p == 0,
    )


def _wait_for(
    groups: list[Any],
    coded: list[tuple[int, int]],
    codeless: list[dict[str, float]],
    say: StatusCallback,
) -> None:
    if not groups:
        return
    needs = len(coded) + len(codeless)
    message = f"waiting for the cluster to fit {needs} replica(s) besides the chief"
    ready = [g.ready() for g in groups]
    said = False
    while True:
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=1.0)
        if len(done) == len(ready):
            return
        if not said:
            say("waiting", message, None)
            said = True


def _supervise(
    chief: ReplicaProcess, actors: list[Any], refs: dict[Any, tuple[int, int]]
) -> RunOutcome:
    box: list[ReplicaResult] = []
    thread = threading.Thread(target=lambda: box.append(chief.run()), daemon=True)
    thread.start()
    pending = list(refs)
    failure: str | None = None
    try:
        failure, pending = _watch(chief, thread, pending)
    except BaseException:  # stopped (SIGTERM) or cancelled: take the chief's processes along
        chief.stop("cancelled")
        thread.join(10)
        raise
    thread.join()
    chief_result = box[0] if box else ReplicaResult("workerpool0-0", None, message="chief lost")
    if failure is None and chief_result.ok and pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=WORKER_GRACE_SECONDS)
        for ref in done:
            result = _result(ref)
            if not result.ok and failure is None:
                failure = result.message
    for actor in actors:  # workers (e.g. parameter servers) end with the chief
        with contextlib.suppress(Exception):
            actor.stop.remote()
    if failure is not None:
        return RunOutcome(ok=False, stopped=False, message=failure)
    if chief_result.stopped:
        return RunOutcome(ok=False, stopped=True, message=chief_result.message)
    return RunOutcome(ok=chief_result.ok, stopped=False, message=chief_result.message)


def _watch(
    chief: ReplicaProcess, thread: threading.Thread, pending: list[Any]
) -> tuple[str | None, list[Any]]:
    """Until the chief ends; a failing replica stops the chief (and so the run)."""
    failure: str | None = None
    while thread.is_alive():
        if pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            for ref in done:
                result = _result(ref)
                if not result.ok and failure is None:
                    failure = result.message or f"{result.name} failed"
                    chief.stop(f"stopped: {failure}")
        else:
            thread.join(0.2)
    return failure, pending


def _result(ref: Any) -> ReplicaResult:
    try:
        result = ray.get(ref)
        assert isinstance(result, ReplicaResult)
        return result
    except Exception as exc:  # the actor died (node lost, OOM): a failed replica
        return ReplicaResult("replica", None, message=f"a replica's actor died: {exc}"[:500])


@ray.remote
def execute_remote(run: RunSpec) -> RunOutcome:
    """A tuning trial: the same run, its chief in this task's process."""
    return execute(run)


def write_status(
    path: str, attempt: int, phase: str, message: str | None, replicas: list[dict[str, Any]] | None
) -> None:
    previous: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as source:
            previous = json.load(source)
    except (OSError, ValueError):
        previous = {}
    data = {
        "attempt": attempt,
        "phase": phase,
        "message": message,
        "replicas": replicas if replicas is not None else previous.get("replicas", []),
        "time": time.time(),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--status", required=True)
    options = parser.parse_args(argv)
    with open(options.spec, encoding="utf-8") as source:
        run = RunSpec.model_validate_json(source.read())

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through execute(): replicas are stopped

    signal.signal(signal.SIGTERM, on_term)

    def status(phase: str, message: str | None, replicas: list[dict[str, Any]] | None) -> None:
        write_status(options.status, run.attempt, phase, message, replicas)

    ray.init(log_to_driver=False)
    outcome = execute(run, status)
    status("succeeded" if outcome["ok"] else "failed", outcome.get("message"), None)
    if not outcome["ok"]:
        print(f"RAYDECK_ERROR: {outcome.get('message')}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
