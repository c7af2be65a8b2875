"""A periodic loop that can be woken early, with per-key single-flight tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["ReconcileLoop"]

log = logging.getLogger(__name__)


class ReconcileLoop:
    """Runs ``tick`` every ``interval`` seconds or as soon as ``wake()`` is called.

    ``spawn(key, coro)`` runs at most one task per key, so a slow cluster start never
    blocks the others and is never started twice.
    """

    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    def busy(self, key: str) -> bool:
        return key in self._inflight

    def spawn(self, key: str, work: Callable[[], Awaitable[None]]) -> None:
        if key in self._inflight:
            return

        async def guarded() -> None:
            try:
                await work()
            except Exception:
                log.exception("%s: work on %s failed", self.name, key)
            finally:
                self._inflight.pop(key, None)
                self._event.set()  # follow-up state changes get handled promptly

        self._inflight[key] = asyncio.create_task(guarded(), name=f"{self.name}:{key}")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._event.clear()
            try:
                await self._tick()
            except Exception:
                log.exception("%s: tick failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=self.interval)
