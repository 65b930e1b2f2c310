"""The engine host: the one thread that runs torch for a session.

torch's CPU thread team (OpenMP) belongs to the thread that first ran torch. A
forward from any other thread ran at half speed on this project's CPUs (27.5 ms
from the loading thread, 54–58 ms from another), so every torch call of a session
(loading, warm-up, prefill, every round of every turn) runs here, on one
long-lived thread. Front ends only send requests and read events, as vLLM's engine
core does in-process; why a thread and not a process is in docs/engine.md ("One engine thread").

    host = EngineHost()
    session = host.start(factory, progress)   # HostedSession; factory runs on the engine thread
    for event in session.send("hi"): ...       # produced on the engine thread, read here
    session.cancel()                           # from any thread; takes effect between rounds
    host.close()

Requests run one at a time in the order sent, so a call made while a turn streams
waits for the turn to end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")
_END = object()
THREAD_NAME = "specchat-engine"
_WAKE_EVERY_S = 0.02  # a chat screen redraws no faster; a reader cannot tell


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class EventStream:
    """What a generator yields on the engine thread, read from another thread.

    An iterator object rather than a generator: a KeyboardInterrupt raised while
    `__next__` waits leaves it usable, so one-shot mode's first Ctrl+C can cancel
    the turn and go on reading to its end. An exception the generator raised is
    raised here, to the reader.

    The reader is woken at most every `_WAKE_EVERY_S` while items stream (and at
    once for the first and the last): woken for every round, it took the
    interpreter lock from the engine thread ~300 times a second, and a round's
    drafting measured 0.37 ms against 0.33 with the same turn read on the engine
    thread itself (2-core EPYC). Items are never held back longer than that, or
    the reader's own 0.1 s wait."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        self._items: deque = deque()
        self._ready = threading.Condition()
        self._woken_at = float("-inf")  # when the reader was last woken
        self._closed = threading.Event()
        self._on_close = on_close
        self._finished = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        with self._ready:
            while not self._items:
                self._ready.wait(timeout=0.1)  # a timeout keeps Ctrl+C deliverable
            item = self._items.popleft()
        if item is _END or isinstance(item, _Raised):
            self._finished = True
            if item is _END:
                raise StopIteration
            raise item.exc
        return item

    def close(self) -> None:
        """Stop reading: the producer is told (`on_close`, e.g. cancel) and its
        generator is closed on the engine thread after the item it is making."""
        if not self._closed.is_set():
            self._closed.set()
            self._on_close()

    # -- the engine thread's side ---------------------------------------------------
    def _put(self, item: Any, wake: bool = False) -> None:
        with self._ready:
            self._items.append(item)
            now = time.monotonic()
            if wake or now - self._woken_at >= _WAKE_EVERY_S:
                self._woken_at = now
                self._ready.notify()

    def _pump(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            if self._closed.is_set():
                return
            items = make()
            try:
                for item in items:
                    self._put(item)
                    if self._closed.is_set():
                        break
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()  # a session's send() counts an early close as a cancel
        except BaseException as exc:  # noqa: BLE001 - the reader decides what it means
            self._put(_Raised(exc), wake=True)
        finally:
            self._put(_END, wake=True)


class EngineHost:
    """A long-lived thread that runs the callables sent to it, one at a time."""

    def __init__(self, name: str = THREAD_NAME) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def on_engine_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future:
        """Run fn(*args) on the engine thread; its result or exception in a Future."""
        future: Future = Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

        self._jobs.put(job)
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the engine thread and wait for it; raises what it raised."""
        if self.on_engine_thread():
            return fn(*args)
        return self.submit(fn, *args).result()

    def stream(self, make: Callable[[], Iterator[Any]], on_close: Callable[[], None] = lambda: None) -> EventStream:
        """Iterate make() on the engine thread; read its items from the returned stream."""
        stream = EventStream(on_close)
        self._jobs.put(lambda: stream._pump(make))
        return stream

    def start(self, factory: Callable[[Callable[[str], None]], Any],
              progress: Callable[[str], None] = lambda _message: None) -> HostedSession:
        """Build the session on the engine thread (`factory(progress)`: load, warm up)."""
        return HostedSession(self, self.call(factory, progress))

    def close(self, timeout: float | None = 5.0) -> None:
        """Let the thread end once the requests already sent are done."""
        self._jobs.put(None)
        if not self.on_engine_thread():
            self._thread.join(timeout)


class HostedSession:
    """A chat session driven from another thread: everything that may run torch is
    sent to the engine thread; settings and history are plain data, read and set
    between turns."""

    def __init__(self, host: EngineHost, session: Any) -> None:
        self.host = host
        self.session = session

    def send(self, text: str) -> EventStream:
        return self.host.stream(lambda: self.session.send(text), on_close=self.session.cancel)

    def cancel(self) -> None:
        self.session.cancel()  # a threading.Event: safe from any thread

    def clear(self) -> None:
        self.host.call(self.session.clear)

    def set_system_prompt(self, text: str | None) -> None:
        self.host.call(self.session.set_system_prompt, text)

    def set_drafter(self, drafter: Any) -> None:
        self.host.call(self.session.set_drafter, drafter)

    def load_history(self, messages: list) -> None:
        self.host.call(self.session.load_history, messages)

    @property
    def settings(self) -> Any:
        return self.session.settings

    @property
    def history(self) -> list:
        return self.session.history

    @property
    def target(self) -> Any:
        return getattr(self.session, "target", None)

    @property
    def drafter(self) -> Any:
        return getattr(self.session, "drafter", None)

    @property
    def system_prompt(self) -> str | None:
        return getattr(self.session, "system_prompt", None)

    @property
    def notes(self) -> list[str]:
        """Warnings from loading the session (a drafter's missing calibration, …)."""
        return list(getattr(self.session, "notes", []))
