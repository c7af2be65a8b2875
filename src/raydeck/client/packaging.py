"""Upload local ``working_dir``/``py_modules`` with Ray's own packaging (imports Ray)."""

from __future__ import annotations

from typing import Any

from ray.job_submission import JobSubmissionClient

from raydeck.core.errors import UnavailableError

__all__ = ["upload_local_paths"]


def upload_local_paths(
    proxy_address: str, token: str, runtime_env: dict[str, Any]
) -> dict[str, Any]:
    """Ray's own errors (it raises RuntimeError/ConnectionError with its guesses) come back as
    UnavailableError naming what was being uploaded."""
    runtime_env = dict(runtime_env)
    try:
        client = JobSubmissionClient(proxy_address, headers={"Authorization": f"Bearer {token}"})
        # Same calls JobSubmissionClient.submit_job makes before POSTing the job.
        client._upload_working_dir_if_needed(runtime_env)
        client._upload_py_modules_if_needed(runtime_env)
    except (RuntimeError, ConnectionError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnavailableError(
            f"uploading working_dir/py_modules through {proxy_address} failed: {first}"[:1000]
        ) from exc
    return runtime_env
