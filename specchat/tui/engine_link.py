"""The chat screen's link to the engine: loading the session, sending a message,
relaying a turn's events. A mixin of SpecChatApp.

Threads: every torch call runs on the session's engine thread (engine/loop/host.py).
The load worker waits for the factory there (tui/loading.py, so Ctrl+Q mid-load
quits at once); the turn worker only relays the turn's events into the inbox the
repaint timer empties (tui/repaint.py). Workers post messages; the handlers here,
on the app's thread, alone touch widgets.
"""

from __future__ import annotations

import time

from textual import work
from textual.worker import get_current_worker

from specchat.engine.loop.host import EngineHost

from .loading import LoadCancelled, wait_for_load
from .messages import EngineFailed, GenerationDone, LoadFailed, LoadProgress, SessionReady
from .sysinfo import memory_text
from .transcript import Prompt, SystemPrompt
from .widgets.prompt import PromptInput


class EngineLinkMixin:
    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _load_session(self) -> None:
        self.host = host = EngineHost()
        worker = get_current_worker()
        try:
            session = wait_for_load(host, self.session_factory, lambda text: self.post_message(LoadProgress(text)),
                                    cancelled=lambda: worker.is_cancelled)
        except LoadCancelled:  # the app is quitting
            return
        except Exception as exc:  # the factory's own errors (ModelError) are user-facing lines
            self.post_message(LoadFailed(str(exc) or type(exc).__name__))
            return
        self.post_message(SessionReady(session))

    def on_load_progress(self, message: LoadProgress) -> None:
        self._set_status(message.text)

    def on_load_failed(self, message: LoadFailed) -> None:
        self.load_error = message.error
        self._set_status(f"could not load models: {message.error}")
        kept = self._waiting.give_back() if self._waiting else None
        note = "\n(your message is back in the box)" if kept else ""
        self.notify(message.error + note, title="model loading failed", severity="error", timeout=30)

    def on_session_ready(self, message: SessionReady) -> None:
        self.session = session = message.session
        self.info.target = getattr(getattr(session, "target", None), "name", "—")
        drafter = getattr(session, "drafter", None)
        self._spec_drafter = drafter if getattr(drafter, "kind", "") != "none" else None
        self.info.drafter = getattr(drafter, "name", "—")
        self.info.speculation = getattr(drafter, "kind", "") != "none"
        self.info.device = str(getattr(getattr(session, "target", None), "device", "—"))
        if self.transcript.answers:  # --resume: give the engine the conversation so far
            self._restore_history()
        else:
            system = getattr(session, "system_prompt", None)
            if system:
                self._fold(SystemPrompt(system))
        for note in getattr(session, "notes", []):
            self.notify(note, severity="warning", timeout=10)
        self._sample_memory()
        self._set_status(self._live_status())
        self.query_one(PromptInput).focus()
        waiting = self._waiting.take() if self._waiting else None
        if waiting is not None:
            self.send(waiting)

    def _live_status(self) -> str:
        where = self.log_file.path if self.log_file else "not saved"
        return f"live · saving to {where}"

    def _sample_memory(self) -> None:
        if self.session is not None:
            self.info.memory = memory_text(getattr(getattr(self.session, "target", None), "device", None))
            self._gauges_dirty = True

    def send(self, text: str) -> None:
        if self.session is None:
            self._send_while_loading(text)
            return
        if self.generating:
            self.notify("still answering: press Esc to stop first", severity="warning")
            return
        self.generating = True
        self._pacer.start(time.monotonic())
        self.query_one(PromptInput).cursor_blink = False  # each blink repaints; not while streaming
        self._fold(Prompt(text))  # saved before the engine starts: a typed prompt is never lost
        self._paint_dirty(now=True)
        self._generate(self.session, text)

    def _send_while_loading(self, text: str) -> None:
        if self.load_error is not None or self._waiting is None:
            self.query_one(PromptInput).restore(text)
            self.notify(f"the models did not load: {self.load_error}", severity="error")
        elif not self._waiting.hold(text, self.prov_colors["user"]):
            self.notify("one message already waits for the models; this one stays in the box",
                        severity="warning")

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _generate(self, session, text: str) -> None:
        # Only relays: the events are made on the engine thread.
        try:
            for event in session.send(text):
                self._inbox.put(event)
        except Exception as exc:  # send() should end turns itself; this is the safety net
            self.post_message(EngineFailed(f"{type(exc).__name__}: {exc}"))
        finally:
            self.post_message(GenerationDone())

    def on_engine_failed(self, message: EngineFailed) -> None:
        self._fold_all(self._inbox.take())
        answer = self.transcript.current
        if answer is not None and not answer.done:
            answer.error = message.error
            self._dirty.add(len(self.transcript.answers) - 1)
        self.notify(message.error, title="generation failed", severity="error")

    def on_generation_done(self, message: GenerationDone) -> None:
        self._fold_all(self._inbox.take())  # the turn's last events
        self.generating = False
        self.query_one(PromptInput).cursor_blink = True
        answer = self.transcript.current
        if answer is not None and not answer.done:  # the stream ended without TurnEnd
            answer.interrupted = True
            self._dirty.add(len(self.transcript.answers) - 1)
        self._set_status(self._live_status())
        self._paint_dirty()
