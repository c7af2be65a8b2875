"""Property-based fuzzing of the whole API from /openapi.json (schemathesis, in-process ASGI):
no request may get a 5xx, every status must be documented, and every response (errors
included) must match the schema documented for its status code."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Api

# Bounded so the whole run stays around a minute or two on two shared cores.
MAX_EXAMPLES = 8

# Built at import: schemathesis parametrizes tests from the schema when they are collected.
_HOME = Path(tempfile.mkdtemp(prefix="raydeck-fuzz-"))
FUZZ_API = Api(_HOME / "home", run_reconcilers=False)


@atexit.register
def _cleanup() -> None:
    FUZZ_API.close()
    shutil.rmtree(_HOME, ignore_errors=True)


schema = schemathesis.openapi.from_asgi("/openapi.json", FUZZ_API.app)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_errors_and_keeps_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers=FUZZ_API.headers("admin"),
        checks=[
            not_a_server_error,
            status_code_conformance,
            response_schema_conformance,
            content_type_conformance,
        ],
        timeout=120,  # the first upload of a framework imports it (torch: many seconds here)
    )
