"""Where a replica runs model code: fast models on the event loop (no thread hand-off),
slow ones on the model thread, and never two calls at once."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from pathlib import Path
from typing import Any

from raydeck.runtime.serving.model_server import ModelServer

PREDICTOR = """
import threading, time

class Recorder:
    def load(self, artifact_dir):
        self.threads = []
        self.active = 0
        self.overlapped = False

    def predict(self, instances, parameters):
        self.active += 1
        self.overlapped |= self.active > 1
        self.threads.append(threading.current_thread().name)
        time.sleep({sleep})
        self.active -= 1
        return [x * 2 for x in instances]
"""


def _server(tmp_path: Path, sleep: float) -> Any:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(PREDICTOR.format(sleep=sleep)))
    (tmp_path / "raydeck_predictor.json").write_text('{"class": "predictor:Recorder"}')
    server_class: Any = ModelServer.func_or_class  # the class under @serve.deployment
    return server_class(framework="custom", artifact_uri=str(tmp_path), batching=None)


def _run_calls(server: Any, concurrent: int) -> list[Any]:
    async def calls() -> list[Any]:
        return await asyncio.gather(*(server.predict([i]) for i in range(concurrent)))

    return asyncio.run(calls())


def test_fast_model_runs_on_the_event_loop_once_measured(tmp_path: Path) -> None:
    server = _server(tmp_path, sleep=0)

    async def one_at_a_time() -> list[Any]:
        return [await server.predict([i]) for i in range(30)]

    outcomes = asyncio.run(one_at_a_time())
    assert outcomes == [{"predictions": [2 * i]} for i in range(30)]
    threads = server.predictor.user.threads  # custom predictors wrap the user's object
    assert threads[0].startswith("model")  # cost unknown yet: the thread
    # The moving average falls below the threshold within a few calls, however slow the
    # first one was on a busy machine; from then on no thread hand-off.
    assert set(threads[-10:]) == {threading.current_thread().name}


def test_slow_model_stays_on_its_thread_one_call_at_a_time(tmp_path: Path) -> None:
    server = _server(tmp_path, sleep=0.01)
    outcomes = _run_calls(server, 1) + _run_calls(server, 8)
    assert outcomes[1:] == [{"predictions": [2 * i]} for i in range(8)]
    recorder = server.predictor.user
    assert all(name.startswith("model") for name in recorder.threads)
    assert not recorder.overlapped
    assert server.typical_seconds >= 0.01
