"""The Ray job of a HyperparameterTuningJob: keeps ``parallel_trial_count`` trials running.

The tuner lives in the control plane (Optuna ask/tell over stored trials); this driver only
asks it for trials when a slot is free, runs each trial as a CustomJob run (``execute`` in a
Ray task that reserves the chief's resources; other pools' replicas as actors), and tells it
how each ended. Many trials share this one driver instead of one Ray job each: a Ray job
costs a driver process start, which would dominate short trials. Trials report metrics
themselves (their replica runner forwards them and stops the trial when it is pruned).

    python -m raydeck.runtime.training.study_driver --spec /path/study.json --status ...
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

import ray

from raydeck.core.models.common import LenientModel
from raydeck.core.models.training import CustomJobSpec
from raydeck.runtime.training.control_plane import ControlPlane
from raydeck.runtime.training.launcher import execute_remote, write_status
from raydeck.runtime.training.spec import RunSpec, ray_options

__all__ = ["StudyDriverSpec", "main", "run_study"]


class StudyDriverSpec(LenientModel):
    job_id: str
    attempt: int = 0
    parallel_trial_count: int
    trial_job_spec: CustomJobSpec


def run_study(spec: StudyDriverSpec, control: ControlPlane) -> None:
    base = f"/api/v1/hyperparameterTuningJobs/{spec.job_id}"
    options = ray_options(spec.trial_job_spec.worker_pool_specs[0].machine_spec)
    timeout = spec.trial_job_spec.scheduling.timeout_seconds
    running: dict[Any, tuple[str, float]] = {}
    timed_out: set[str] = set()
    done = False
    try:
        while True:
            free = spec.parallel_trial_count - len(running)
            if free > 0 and not done:
                answer = control.call("POST", f"{base}/trials:suggest", {"count": free})
                for trial in answer.get("trials", []):
                    run = RunSpec(
                        job_id=spec.job_id,
                        run_id=trial["id"],
                        attempt=spec.attempt,
                        output_dir=trial["output_dir"],
                        pools=spec.trial_job_spec.worker_pool_specs,
                        trial_id=trial["id"],
                        extra_args=trial["args"],
                        report_path=f"{base}/trials/{trial['id']}:report",
                    )
                    ref = execute_remote.options(**options).remote(run)
                    running[ref] = (trial["id"], time.monotonic())
                done = bool(answer.get("done"))
            if not running:
                if done:
                    return
                time.sleep(0.5)
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                trial_id, _started = running.pop(ref)
                outcome = _outcome(ref, trial_id in timed_out, timeout)
                control.call("POST", f"{base}/trials/{trial_id}:complete", outcome)
            if timeout is not None:
                now = time.monotonic()
                for ref, (trial_id, started) in running.items():
                    if trial_id not in timed_out and now - started > timeout:
                        timed_out.add(trial_id)
                        ray.cancel(ref)
    finally:
        for ref in running:  # stopped or failed: no trial outlives its driver
            ray.cancel(ref)


def _outcome(ref: Any, timed_out: bool, timeout: float | None) -> dict[str, Any]:
    if timed_out:
        return {"ok": False, "stopped": False, "message": f"trial timed out after {timeout}s"}
    try:
        outcome = ray.get(ref)
        return {
            "ok": bool(outcome["ok"]),
            "stopped": bool(outcome["stopped"]),
            "message": outcome.get("message"),
        }
    except Exception as exc:  # the task died (node lost, worker killed)
        return {"ok": False, "stopped": False, "message": f"trial task died: {exc}"[:1000]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--status", required=True)
    options = parser.parse_args(argv)
    with open(options.spec, encoding="utf-8") as source:
        spec = StudyDriverSpec.model_validate(json.load(source))

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    ray.init(log_to_driver=False)
    write_status(options.status, spec.attempt, "running", None, [])
    control = ControlPlane()
    try:
        run_study(spec, control)
    except RuntimeError as exc:
        write_status(options.status, spec.attempt, "failed", str(exc), None)
        print(f"RAYDECK_ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        control.close()
    write_status(options.status, spec.attempt, "succeeded", None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
