"""Records -> transcript -> widgets: the repaint side of the chat screen. A mixin
of SpecChatApp.

Events wait in the app's `EventInbox`; the repaint timer folds them into the
`Transcript` and the autosave (one write a batch), marks the answers they touched,
and repaints those views and the gauges: as often as the pacer allows while an
answer streams (tui/pacing.py), the gauges at most every STREAM_GAUGES_S, all of it
when the user does something (`now`).
"""

from __future__ import annotations

import time

from textual.css.query import NoMatches
from textual.widgets import Static

from specchat.engine.loop.events import TurnStart

from .render import legend
from .stats import compute
from .transcript import Answer, Record
from .widgets.chat import AnswerView, ChatView, UserMessage
from .widgets.gauges import Gauges
from .widgets.inspector import Inspector

# While an answer streams, the answer repaints as often as pacing.py's CPU budget
# allows and the gauges at most once a second; everything repaints when it ends.
STREAM_GAUGES_S = 1.0


class RepaintMixin:
    def _fold(self, record: Record, log: bool = True) -> Answer | None:
        return self._fold_all([record], log)

    def _fold_all(self, records: list[Record], log: bool = True) -> Answer | None:
        """Fold records in order (saved with one write); returns the answer the last touched."""
        if not records:
            return None
        if log and self.log_file is not None:
            try:
                self.log_file.append(*records)
            except OSError as exc:  # keep chatting; say once that saving failed
                self.notify(f"autosave failed: {exc}", severity="error")
                self.log_file = None
        if log and self.recorder is not None:
            self.recorder.append(*records)  # the history store; it says itself when it fails
        answer = None
        for record in records:
            answer = self.transcript.apply(record)
            if answer is not None:
                index = next(i for i in range(len(self.transcript.answers) - 1, -1, -1)
                             if self.transcript.answers[i] is answer)
                if index >= self._mounted:  # counted, not queried: a DOM query per event cost ~1 ms
                    self._mount_answer(answer, index)
                self._dirty.add(index)
            if isinstance(record, TurnStart):
                self.info.target, self.info.drafter, self.info.device = record.target, record.drafter, record.held_on()
        self._gauges_dirty = True
        return answer

    def _mount_answer(self, answer: Answer, index: int) -> None:
        chat = self.query_one(ChatView)
        view = AnswerView(answer, index)
        view.markdown = self.markdown_all and answer.done
        chat.mount(UserMessage(answer.user_text, self.prov_colors["user"]))
        chat.mount(view)
        self._views.append(view)
        self._mounted += 1

    def _paint_dirty(self, now: bool = False) -> None:
        """Fold the engine's waiting events, then repaint what changed; while an
        answer streams when the pacer says so, unless `now` (the user did something)."""
        # Not named _flush: textual's App._flush(stderr) serves its print capture, and
        # overriding it broke the printing of any error at exit.
        self._fold_all(self._inbox.take())
        if not self._dirty and not self._gauges_dirty:
            return
        clock = time.monotonic()
        if self.generating and not now and not self._pacer.due(clock):
            return
        try:
            self._paint()
        except NoMatches:  # the repaint timer fired while the screen was being taken down
            pass
        if self.generating and not now:
            self._pacer.painted(time.monotonic())

    def _paint(self) -> None:
        chat = self.query_one(ChatView)
        follow = chat.scroll_offset.y >= chat.max_scroll_y - 1
        views = self._views
        colors = self.prov_colors
        waiting = set()  # views mounted but not composed yet: draw them next tick
        for index in sorted(self._dirty):
            if index < len(views) and views[index].is_mounted and views[index].children:
                views[index].redraw(colors, self.show_rejected)
            else:
                waiting.add(index)
        inspector = self.query_one(Inspector)
        if inspector.display and inspector.answer is not None:
            shown = inspector.answer
            if any(views[i].answer is shown for i in self._dirty if i < len(views)):
                inspector.show(shown, inspector.answer_number, colors)
        self._dirty = waiting
        clock = time.monotonic()
        if self._gauges_dirty and (not self.generating or clock - self._gauges_at >= STREAM_GAUGES_S):
            self.query_one(Gauges).show(compute(self.transcript), self.info, colors)
            self._gauges_dirty = False
            self._gauges_at = clock
        if follow:
            chat.scroll_end(animate=False)

    def _repaint_all(self) -> None:
        self._dirty.update(range(len(self.transcript.answers)))
        self._gauges_dirty = True
        colors = self.prov_colors
        self.query_one("#legend", Static).update(legend(colors))
        for view in self.query(UserMessage):
            view.recolor(colors["user"])
        inspector = self.query_one(Inspector)
        if inspector.answer is not None:
            inspector.show(inspector.answer, inspector.answer_number, colors)
        self._paint_dirty(now=True)
