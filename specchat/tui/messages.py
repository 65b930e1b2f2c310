"""Messages the engine worker posts to the app (the only way it talks to the UI)."""

from __future__ import annotations

import threading

from textual.message import Message

from specchat.engine.loop.events import Event


class EventInbox:
    """Engine events on their way from the relay thread to the UI thread.

    The relay puts each event here; the UI thread takes everything waiting on its
    repaint timer and folds (and autosaves) it as one batch. A message per event
    cost the UI thread ~1 ms each, dozens a second at today's speeds, and the UI's
    work comes out of the same two cores torch decodes on: batched, it stays
    bounded however fast the engine streams."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def put(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def take(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events


class EngineFailed(Message):
    """`send()` raised instead of ending the turn with an error event."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class GenerationDone(Message):
    """The worker has left `send()`; the app may accept the next prompt."""


class SessionReady(Message):
    """The session factory returned (models loaded)."""

    def __init__(self, session: object) -> None:
        super().__init__()
        self.session = session


class LoadProgress(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class LoadFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
