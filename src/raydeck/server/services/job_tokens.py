"""Job-scoped tokens: code running on a cluster calls the control plane with its own token.

A token is made when Raydeck submits a Ray job (plain job, custom job attempt, tuning driver)
and revoked when that job ends; only its hash is stored, like every token. The job sees it
as ``RAYDECK_TOKEN`` next to ``RAYDECK_SERVER`` (the server's advertised URL), unless the
submitter already set either variable. A job-scoped token acts as the account that submitted
the job, in the cluster's project only, and only for what code in a job calls
(``JOB_PERMISSIONS``: reading connections for ``raydeck.data``, registering models, reporting
trial metrics, reading jobs): it can never do more than its submitter can in that project,
nor more than a job needs. Jobs whose submitter is unknown (stored before submitters were
recorded) act as the service account ``jobs-<project>`` (``user`` in that project), narrowed
the same way. A token expires after a week at the latest, in case the revocation is missed.

Ray shows a job's runtime_env (env vars included) to anyone who can read its jobs, so
everything Raydeck hands out about Ray jobs (its job API, the Ray Jobs proxy, job and replica
logs) goes through ``redact_*``: ``RAYDECK_TOKEN`` values and anything shaped like a Raydeck
secret are replaced by ``REDACTED``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.ids import new_id
from raydeck.core.models import Role
from raydeck.core.models.access import AccountKind
from raydeck.core.settings import Settings
from raydeck.db.models import AccountRow, ClusterRow, RoleBindingRow, TokenRow, utcnow
from raydeck.server.services.access import ensure_account
from raydeck.server.services.tokens import SECRET_PREFIX, hash_secret

__all__ = [
    "JOB_PERMISSIONS",
    "JOB_TOKEN_TTL",
    "REDACTED",
    "TOKEN_ENV_VARS",
    "discard_job_token",
    "issue_job_token",
    "job_runtime_env",
    "job_token_name",
    "redact_json_body",
    "redact_runtime_env",
    "redact_text",
    "revoke_job_token",
    "wants_job_token",
]

JOB_TOKEN_TTL = timedelta(days=7)
# What code running in a job calls back (raydeck.data, raydeck.models, trial reporting, the
# tuning driver, the batch predictor's table connections), and nothing else.
JOB_PERMISSIONS: tuple[str, ...] = (
    "connections.get",
    "connections.list",
    "connections.resolve",
    "connections.query",
    "models.get",
    "models.list",
    "models.upload",
    "custom_jobs.get",
    "custom_jobs.report",
    "tuning_jobs.get",
    "tuning_jobs.run",
    "jobs.get",
    "jobs.list",
    "jobs.logs",
)
REDACTED = "<redacted>"
TOKEN_ENV_VARS = frozenset({"RAYDECK_TOKEN"})
# Secrets are SECRET_PREFIX + token_urlsafe(32) (43 characters); JSON never escapes those.
_SECRET_PATTERN = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]{16,}")
_SECRET_BYTES = re.compile(_SECRET_PATTERN.pattern.encode())


def job_token_name(cluster_id: str, submission_id: str) -> str:
    """Deterministic, so the token can be found (and revoked) from the job alone."""
    digest = hashlib.sha256(f"{cluster_id}/{submission_id}".encode()).hexdigest()[:24]
    return f"job-{digest}"


def issue_job_token(
    session: Session, cluster_id: str, submission_id: str, submitter: str | None
) -> str:
    """A new secret for this Ray job (an earlier one for the same job is revoked), acting
    for ``submitter`` (an account name) in the cluster's project with ``JOB_PERMISSIONS``."""
    name = job_token_name(cluster_id, submission_id)
    revoke_job_token(session, cluster_id, submission_id)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    cluster = session.get(ClusterRow, cluster_id)
    project = cluster.project if cluster is not None else "default"
    account = None
    if submitter is not None:
        account = session.scalar(select(AccountRow).where(AccountRow.name == submitter))
    if account is None:
        account = _jobs_account(session, project)
    session.add(
        TokenRow(
            id=new_id("tok"),
            name=name,
            role="job",
            account_id=account.id,
            prefix=secret[:12],
            secret_hash=hash_secret(secret),
            created_at=now,
            expires_at=now + JOB_TOKEN_TTL,
            scope_project=project,
            scope_permissions=list(JOB_PERMISSIONS),
        )
    )
    session.flush()
    return secret


def _jobs_account(session: Session, project: str) -> AccountRow:
    """The service account job tokens of ``project`` act as: ``user`` there, nowhere else."""
    account = ensure_account(session, f"jobs-{project}", AccountKind.SERVICE_ACCOUNT)
    bound = session.scalar(
        select(RoleBindingRow.id).where(
            RoleBindingRow.account_id == account.id,
            RoleBindingRow.project == project,
            RoleBindingRow.role == Role.USER.value,
        )
    )
    if bound is None:
        session.add(
            RoleBindingRow(
                id=new_id("rb"), account_id=account.id, project=project, role=Role.USER.value
            )
        )
        session.flush()
    return account


def revoke_job_token(session: Session, cluster_id: str, submission_id: str) -> None:
    name = job_token_name(cluster_id, submission_id)
    for row in session.scalars(
        select(TokenRow).where(TokenRow.name == name, TokenRow.revoked_at.is_(None))
    ):
        row.revoked_at = utcnow()


def discard_job_token(session: Session, cluster_id: str, submission_id: str) -> None:
    """The submission was refused: remove the token as if it had never been made."""
    name = job_token_name(cluster_id, submission_id)
    for row in session.scalars(select(TokenRow).where(TokenRow.name == name)):
        session.delete(row)


def wants_job_token(runtime_env: dict[str, Any] | None) -> bool:
    return "RAYDECK_TOKEN" not in ((runtime_env or {}).get("env_vars") or {})


def job_runtime_env(
    runtime_env: dict[str, Any] | None,
    settings: Settings,
    secret: str,
    project: str = "default",
) -> dict[str, Any]:
    """``runtime_env`` with RAYDECK_SERVER / RAYDECK_TOKEN (and RAYDECK_PROJECT outside the
    default project) added where the user set none."""
    env = dict(runtime_env or {})
    env_vars = {str(k): str(v) for k, v in (env.get("env_vars") or {}).items()}
    env_vars.setdefault("RAYDECK_SERVER", settings.advertised_url)
    env_vars.setdefault("RAYDECK_TOKEN", secret)
    if project != "default":
        env_vars.setdefault("RAYDECK_PROJECT", project)
    env["env_vars"] = env_vars
    return env


def redact_text(text: str) -> str:
    """``text`` with every Raydeck secret in it replaced (logs, Ray's messages)."""
    return _SECRET_PATTERN.sub(REDACTED, text)


def redact_runtime_env(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``runtime_env`` whose token env vars show ``REDACTED``."""
    if not runtime_env:
        return runtime_env
    redacted = _redact_value(runtime_env)
    assert isinstance(redacted, dict)
    return redacted


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if k in TOKEN_ENV_VARS and isinstance(v, str) and v else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_json_body(body: bytes) -> bytes:
    """A proxied Ray answer without tokens: secrets anywhere (also inside serialized
    runtime envs of the state API), and any value of a ``RAYDECK_TOKEN`` key."""
    body = _SECRET_BYTES.sub(REDACTED.encode(), body)
    if not any(name.encode() in body for name in TOKEN_ENV_VARS):
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return json.dumps(_redact_value(data)).encode()
