"""The conversation: user messages and answers with provenance colouring.

Widgets here only draw what the app hands them; the app decides when (on its
repaint timer), so a stream of tokens costs one repaint per tick, not per token.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Markdown, Static

from ..render import Piece, answer_text, pieces, safe
from ..transcript import Answer

_STATUS_LABEL = {
    "streaming": "generating…",
    "complete": "",
    "length": "stopped at max tokens",
    "stopped": "⏹ stopped",
    "interrupted": "⏹ interrupted (app closed)",
    "error": "✖ error",
}


WAITING = "waiting for the models…"


class UserMessage(Static):
    """A message the user sent; `waiting` marks one sent while the models load."""

    def __init__(self, text: str, color: str, waiting: bool = False) -> None:
        super().__init__(self._render_text(text, color, waiting), classes="user-message")
        self.text = text
        self.waiting = waiting

    @staticmethod
    def _render_text(text: str, color: str, waiting: bool = False) -> Text:
        out = Text("You  ", Style(color=color, bold=True))
        out.append(safe(text))
        if waiting:
            out.append(f"\n{WAITING}", Style(dim=True, italic=True))
        return out

    def recolor(self, color: str) -> None:
        self.update(self._render_text(self.text, color, self.waiting))


class AnswerView(Widget, can_focus=True):
    """One answer. Keys: ←/→ move a token cursor, Enter opens that token's round
    in the inspector, m switches between the provenance view and Markdown."""

    BINDINGS = [
        Binding("left", "cursor(-1)", "Prev token", show=False),
        Binding("right", "cursor(1)", "Next token", show=False),
        Binding("home", "cursor_to(0)", show=False),
        Binding("end", "cursor_to(-1)", show=False),
        Binding("enter", "open_round", "Open round"),
        Binding("m", "toggle_markdown", "Markdown"),
    ]

    class TokenSelected(Message):
        """The token cursor moved (open=False) or a token was chosen (open=True)."""

        def __init__(self, view: "AnswerView", round_index: int, position: int, open: bool) -> None:
            super().__init__()
            self.view = view
            self.round_index = round_index
            self.position = position
            self.open = open

    def __init__(self, answer: Answer, index: int) -> None:
        super().__init__(classes="answer")
        self.answer = answer
        self.index = index
        self.markdown = False
        self.cursor: int | None = None
        self.items: list[Piece] = []
        self.rendered = Text()
        self._header = Text()

    def compose(self) -> ComposeResult:
        yield Static(classes="answer-header")
        yield Static(classes="answer-body")
        # No Markdown widget until the answer is first shown as Markdown: mounting one
        # with every answer cost the UI thread ~0.3 s while the engine decoded.

    def redraw(self, colors: dict[str, str], show_rejected: bool) -> None:
        """Rebuild from the answer's rounds (called by the app's repaint timer)."""
        a = self.answer
        self.items = pieces(a, show_rejected)
        if self.cursor is not None and self.cursor >= len(self.items):
            self.cursor = len(self.items) - 1 if self.items else None
        text = answer_text(self.items, colors, self.cursor, streaming=not a.done)
        if a.error or (a.end and a.end.error):
            text.append("\n" + safe(a.error or a.end.error or ""), Style(color=colors["rejected"]))
        self.rendered = text
        header = Text("specchat", Style(bold=True))
        t = a.totals
        if a.start:
            header.append(f"  {t.tokens} tokens · {t.rounds} rounds", Style(dim=True))
        label = _STATUS_LABEL[a.status]
        if label:
            header.append(f"  {label}", Style(color=colors["correction"], bold=True))
        if self.markdown:
            header.append("  [markdown]", Style(dim=True))
        for note in a.notices:
            header.append(f"\nℹ {safe(note)}", Style(dim=True, italic=True))
        if header != self._header:  # a Static update costs a layout pass; skip the same text
            self._header = header
            self.query_one(".answer-header", Static).update(header)
        body = self.query_one(".answer-body", Static)
        body.display = not self.markdown
        markdowns = self.query(".answer-markdown")
        if self.markdown and not markdowns:
            self.mount(Markdown(a.text, classes="answer-markdown"))
        for md in markdowns:
            md.display = self.markdown
            if self.markdown:
                md.update(a.text)
        if not self.markdown:
            body.update(text)

    def _move(self, new: int) -> None:
        if not self.items:
            return
        self.cursor = max(0, min(new, len(self.items) - 1))
        piece = self.items[self.cursor]
        self.post_message(self.TokenSelected(self, piece.round_index, piece.position, open=False))

    def action_cursor(self, step: int) -> None:
        self._move((self.cursor if self.cursor is not None else -1 if step > 0 else len(self.items)) + step)

    def action_cursor_to(self, where: int) -> None:
        self._move(where if where >= 0 else len(self.items) - 1)

    def action_open_round(self) -> None:
        if self.cursor is None:
            self._move(0)
        if self.cursor is not None:
            piece = self.items[self.cursor]
            self.post_message(self.TokenSelected(self, piece.round_index, piece.position, open=True))

    def action_toggle_markdown(self) -> None:
        if not self.answer.done:
            self.notify("Markdown view is for finished answers", severity="warning")
            return
        self.markdown = not self.markdown
        self.post_message(self.TokenSelected(self, -1, -1, open=False))  # ask for a redraw

    def on_click(self, event: events.Click) -> None:
        index = event.style.meta.get("token")
        if isinstance(index, int) and index < len(self.items):
            self.focus()
            self.cursor = index
            piece = self.items[index]
            self.post_message(self.TokenSelected(self, piece.round_index, piece.position, open=True))


class ChatView(VerticalScroll):
    """User messages and answers, newest at the bottom; follows the stream while
    the user has not scrolled up."""

    def answers(self) -> list[AnswerView]:
        return list(self.query(AnswerView))
