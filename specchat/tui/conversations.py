"""Which conversation the chat screen holds, and where it is kept: a mixin of SpecChatApp.

Each conversation on screen has a round trace (the JSON-lines autosave, persist.py)
and a row in the history store (specchat/history/), both written from the same
records as they are folded in. `--resume [ID]` and the picker (Ctrl+O) rebuild a
stored conversation (history/rebuild.py), show it, and hand its turns to the
session already loaded: no model restarts. A history store that cannot be opened
is said once; the chat goes on with the trace file alone.
"""

from __future__ import annotations

from pathlib import Path

from specchat.history.rebuild import Rebuilt

from .persist import ConversationLog
from .transcript import SystemPrompt, Transcript
from .widgets.chat import ChatView
from .widgets.inspector import Inspector


class ConversationsMixin:
    store = None  # HistoryStore, or None when it could not be opened
    recorder = None  # TurnRecorder of the conversation on screen

    def _open_store(self) -> None:
        from specchat.history.opening import open_history
        from specchat.history.store import HistoryError

        try:
            self.store, report = open_history(self.data_dir)
        except HistoryError as exc:
            self._history_failed(str(exc))
            return
        for problem in report.unreadable:
            self.notify(f"not imported into the history: {problem}", severity="warning", timeout=10)

    def _history_failed(self, message: str) -> None:
        self.notify(f"history not saved: {message}", severity="error", timeout=15)

    def _start_log(self, conversation_id: int | None = None, trace: Path | None = None, index: int = 0) -> None:
        """A trace file (appended to, or a new one) and a recorder for the conversation on screen."""
        from specchat.history.recorder import TurnRecorder

        self._close_log()
        self.log_file = ConversationLog(trace) if trace is not None else ConversationLog.new(self.data_dir)
        if self.store is not None:
            self.recorder = TurnRecorder(self.store, source="chat", conversation_id=conversation_id,
                                         trace=self.log_file.path, first_trace_index=index if trace else 0,
                                         on_error=self._history_failed)

    def _close_log(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def _find_conversation(self, wanted: str | int) -> Rebuilt | None:
        """A stored conversation by id (or "last"), rebuilt; None (and a note) when there is none."""
        from specchat.history.rebuild import rebuild
        from specchat.history.store import HistoryError

        if self.store is None:
            return None
        try:
            if wanted == "last":
                latest = self.store.latest()
                found = rebuild(self.store, latest.id) if latest else None
            else:
                found = rebuild(self.store, int(wanted))
        except HistoryError as exc:
            self._history_failed(str(exc))
            return None
        if found is None:
            what = "no saved conversation to resume" if wanted == "last" else f"no conversation {wanted}"
            self.notify(f"{what}; starting a new one", severity="warning", timeout=8)
        return found

    def _show_conversation(self, found: Rebuilt) -> None:
        self._clear_screen()
        self.transcript = found.transcript
        for index, answer in enumerate(self.transcript.answers):
            self._mount_answer(answer, index)
            self._dirty.add(index)
        self._start_log(found.conversation.id, found.trace, found.next_trace_index)
        self.conversation_title = found.conversation.title

    def _clear_screen(self) -> None:
        self.query_one(ChatView).remove_children()
        self._mounted = 0
        self._views = []
        inspector = self.query_one(Inspector)
        inspector.display = False
        inspector.answer = None
        self._gauges_dirty = True

    def open_conversation(self, conversation_id: int | None) -> None:
        """Show a stored conversation and go on with it, on the models already loaded."""
        if conversation_id is None:
            return
        if self.generating:
            self.notify("still answering: press Esc to stop first", severity="warning")
            return
        if self._waiting is not None:
            self._waiting.give_back()
        found = self._find_conversation(conversation_id)
        if found is None:
            return
        self._show_conversation(found)
        if self.session is not None:
            self._restore_history()
        self._set_status(self._live_status())
        self._repaint_all()
        self.notify(f"opened conversation {conversation_id}: {found.conversation.title}")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "open_history" and self.replay:
            return False  # a replay has no store: no key in the footer either
        return super().check_action(action, parameters)

    def action_open_history(self) -> None:
        from .picker import ConversationPicker

        if self.store is None:
            self.notify("no history to open (it could not be opened)", severity="warning")
            return
        self.push_screen(ConversationPicker(self.store), self.open_conversation)

    def _restore_history(self) -> None:
        from specchat.engine.loop.session import Message

        status = {"stopped": "cancelled", "interrupted": "cancelled", "error": "error"}
        messages = []
        for a in self.transcript.answers:
            messages.append(Message("user", a.user_text))
            messages.append(Message("assistant", a.text, status.get(a.status, "complete")))
        if self.transcript.system_prompt is not None:
            self.session.set_system_prompt(self.transcript.system_prompt)
        self.session.load_history(messages)

    def _new_conversation(self) -> None:
        self._start_log()
        system = self.transcript.system_prompt
        self.transcript = Transcript()
        self._clear_screen()
        if system:
            self._fold(SystemPrompt(system))
        self._set_status(self._live_status())
