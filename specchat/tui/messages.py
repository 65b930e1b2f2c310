"""Messages the engine worker posts to the app (the only way it talks to the UI)."""

from __future__ import annotations

from textual.message import Message

from specchat.engine.events import Event


class EngineEvent(Message):
    """One engine event, as yielded by `ChatSession.send`."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


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
