"""The multi-line prompt: Enter sends, Ctrl+J (or Shift+Enter where the terminal
reports it) inserts a newline, Up/Down on the first/last line recall earlier prompts."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.sent: list[str] = []
        self._recall: int | None = None  # index into history while recalling
        self._draft = ""  # what was typed before recalling started

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text.strip()
            if text:
                self.sent.append(self.text)
                self._recall = None
                self.clear()
                self.post_message(self.Submitted(text))
            return
        if event.key in ("ctrl+j", "shift+enter"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if event.key == "up" and self.cursor_location[0] == 0 and self.sent:
            event.stop()
            event.prevent_default()
            if self._recall is None:
                self._draft = self.text
                self._recall = len(self.sent)
            self._recall = max(0, self._recall - 1)
            self._show(self.sent[self._recall])
            return
        if event.key == "down" and self._recall is not None and self.cursor_location[0] == self.document.line_count - 1:
            event.stop()
            event.prevent_default()
            self._recall += 1
            if self._recall >= len(self.sent):
                self._recall = None
                self._show(self._draft)
            else:
                self._show(self.sent[self._recall])
            return
        await super()._on_key(event)

    def restore(self, text: str) -> None:
        """Put a message the app could not take back into the box, before what is
        typed there now: nothing typed is lost."""
        rest = self.text.strip("\n")
        self._show(f"{text}\n{rest}" if rest else text)

    def _show(self, text: str) -> None:
        self.text = text
        self.move_cursor(self.document.end)
