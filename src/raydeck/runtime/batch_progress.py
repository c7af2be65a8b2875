"""The progress counter actor of a batch prediction, in a module of its own: the actor's
worker process imports only this (and Ray), not Ray Data or the model code, so starting it
takes little from the model actors it runs beside."""

from __future__ import annotations

from typing import Any

import ray

__all__ = ["ProgressCounter", "RemoteCounter"]


class ProgressCounter:
    """A small actor the model actors report to; the driver reads it for progress lines."""

    def __init__(self) -> None:
        self.rows = 0
        self.failed = 0
        self.batches = 0
        self.invalid: list[tuple[str, str]] = []
        self.first_error: str | None = None

    def add(self, rows: int, failed: int, first_error: str | None = None) -> None:
        self.rows += rows
        self.failed += failed
        self.batches += 1
        if self.first_error is None and first_error:
            self.first_error = first_error[:500]

    def add_invalid(self, text: str, reason: str) -> bool:
        self.invalid.append((text, reason))
        self.rows += 1
        self.failed += 1
        if self.first_error is None:
            self.first_error = reason[:500]
        return True

    def totals(self) -> dict[str, int]:
        return {"rows": self.rows, "failed": self.failed, "batches": self.batches}

    def error_example(self) -> str | None:
        """The first row error seen, for the job's reason when too many rows failed."""
        return self.first_error

    def invalid_rows(self) -> list[tuple[str, str]]:
        return list(self.invalid)


RemoteCounter: Any = ray.remote(num_cpus=0)(ProgressCounter)
