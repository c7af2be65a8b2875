"""Upload local ``working_dir``/``py_modules`` with Ray's own packaging (imports Ray)."""

from __future__ import annotations

from typing import Any

from ray.job_submission import JobSubmissionClient

__all__ = ["upload_local_paths"]


def upload_local_paths(
    proxy_address: str, token: str, runtime_env: dict[str, Any]
) -> dict[str, Any]:
    client = JobSubmissionClient(proxy_address, headers={"Authorization": f"Bearer {token}"})
    runtime_env = dict(runtime_env)
    # Same calls JobSubmissionClient.submit_job makes before POSTing the job.
    client._upload_working_dir_if_needed(runtime_env)
    client._upload_py_modules_if_needed(runtime_env)
    return runtime_env
