"""Loading the session on the engine thread, in a way the app can walk away from.

The chat screen loads its models in a thread worker that waits for the engine
thread. Waiting on the load's future without a timeout kept that worker alive
until the models were in, and Python's exit waits for the worker: Ctrl+Q during
"loading models…" would hang until the load ended. Here the worker looks up every
`POLL_S` and stops waiting once the app is quitting, and the factory's next
progress line raises `LoadCancelled` on the engine thread, so the load itself
stops at its next step.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from specchat.engine.loop.host import EngineHost, HostedSession

POLL_S = 0.05


class LoadCancelled(BaseException):
    """The app quit while the models loaded. A BaseException, so a loader's broad
    `except Exception` (a drafter fallback) does not take it for a load error."""


def wait_for_load(host: EngineHost, factory: Callable[[Callable[[str], None]], Any],
                  progress: Callable[[str], None], cancelled: Callable[[], bool]) -> HostedSession:
    """factory(progress) on the engine thread, as `host.start` does; raises
    LoadCancelled as soon as `cancelled()` turns true, and what the factory raised."""

    def checked(text: str) -> None:
        if cancelled():
            raise LoadCancelled()
        progress(text)

    future = host.submit(factory, checked)
    while True:
        try:
            return HostedSession(host, future.result(timeout=POLL_S))
        except FutureTimeout:
            if cancelled():
                raise LoadCancelled() from None
