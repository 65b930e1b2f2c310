"""One-shot answers in the history: logged as they stream, and `-c/--continue [ID]`
(the answer as the next turn of a stored conversation, the earlier turns read by
the model first).

    log = OneShotLog.open(continue_id, enabled)    # before any model loads
    log.prepare(session)                            # the conversation so far, into the session
    run_turn(log.wrap(session), text, ...)          # every event recorded on its way to stdout
    log.close()

Without -c a history that cannot be used costs only the logging (a warning on
stderr, the answer still comes); with -c it is an error (HistoryError), since
the conversation to continue is in it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any, Callable

from specchat.tui.transcript import Prompt

from .recorder import TurnRecorder
from .store import HistoryError, HistoryStore

ANSWERED = {"complete": "complete", "length": "complete", "stopped": "cancelled", "interrupted": "cancelled",
            "error": "error"}


class OneShotLog:
    def __init__(self, store: HistoryStore | None, conversation_id: int | None = None,
                 warn: Callable[[str], None] = lambda _m: None) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.warn = warn
        self.recorder: TurnRecorder | None = None

    @classmethod
    def open(cls, continue_id: str | None, enabled: bool, base=None, err: IO[str] | None = None) -> "OneShotLog":
        from .command import parse_id
        from .opening import open_history

        err = err or sys.stderr
        warn = lambda message: print(f"specchat: warning: {message}", file=err, flush=True)  # noqa: E731
        if continue_id is None and not enabled:
            return cls(None)
        try:
            store, _report = open_history(base)
        except HistoryError as exc:
            if continue_id is not None:
                raise
            warn(f"this answer is not logged: {exc}")
            return cls(None)
        if continue_id is None:
            return cls(store, None, warn)
        wanted = parse_id(continue_id)
        found = store.latest() if wanted is None else store.conversation(wanted)
        if found is None:
            store.close()
            raise HistoryError("no conversation to continue yet" if wanted is None else
                               f"no conversation {wanted} to continue (see `specchat history`)")
        return cls(store, found.id, warn)

    def prepare(self, session: Any) -> None:
        """Give the session the conversation being continued (on its engine thread)."""
        if self.store is None or self.conversation_id is None:
            return
        from specchat.engine.loop.session import Message

        conversation = self.store.conversation(self.conversation_id)
        messages = []
        for turn in self.store.turns(self.conversation_id):
            messages += [Message("user", turn.prompt), Message("assistant", turn.answer, ANSWERED[turn.status])]
        if conversation is not None and conversation.system_prompt:
            session.set_system_prompt(conversation.system_prompt)
        session.load_history(messages)

    def wrap(self, session: Any, trace: Any = None) -> Any:
        """The session, its turn recorded (naming `trace`, the --trace file, as its rounds)."""
        if self.store is None:
            return session
        system = getattr(session, "system_prompt", None)
        self.recorder = TurnRecorder(self.store, source="oneshot", conversation_id=self.conversation_id,
                                     trace=Path(trace).resolve() if trace else None, system_prompt=system,
                                     on_error=lambda m: self.warn(f"logging stopped: {m}"))
        return _Logged(session, self.recorder)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.store is not None:
            self.store.close()


class _Logged:
    """The session as one-shot mode drives it (send, cancel), each event recorded."""

    def __init__(self, session: Any, recorder: TurnRecorder) -> None:
        self.session = session
        self.recorder = recorder

    def send(self, text: str) -> "_Recorded":
        self.recorder.append(Prompt(text))  # before the engine starts: a kill leaves the question
        return _Recorded(self.session.send(text), self.recorder)

    def cancel(self) -> None:
        self.session.cancel()


class _Recorded:
    """An iterator object, not a generator: a Ctrl+C while it waits leaves it
    usable (one-shot mode's first Ctrl+C cancels and reads on), as EventStream."""

    def __init__(self, events: Any, recorder: TurnRecorder) -> None:
        self.events = iter(events)
        self.recorder = recorder

    def __iter__(self) -> "_Recorded":
        return self

    def __next__(self) -> Any:
        item = next(self.events)
        self.recorder.append(item)
        return item
