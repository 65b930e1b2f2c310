"""The conversation picker (Ctrl+O, or "Open conversation…" in the palette).

Recent conversations first; typing filters them, searching every message's text
(the history store's search: each word, as a word prefix where the store has
FTS5). Enter or a click opens the highlighted one, Esc goes back. It dismisses
with the conversation's id; the app opens it on the models already loaded.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from specchat.history.markdown import when
from specchat.history.store import Conversation, HistoryError, HistoryStore

LIMIT = 50


def label(c: Conversation) -> Text:
    out = Text(f"{c.id:>4}  ", style="dim")
    out.append(c.title or "(no message)", style="bold")
    out.append(f"  {when(c.updated)} · {c.turns} turn{'s' if c.turns != 1 else ''}", style="dim")
    if c.models:
        out.append(f" · {c.models}", style="dim")
    if c.snippet:
        out.append(f"\n      {c.snippet}", style="italic")
    return out


class ConversationPicker(ModalScreen[int | None]):
    DEFAULT_CSS = """
    ConversationPicker { align: center middle; }
    #picker { width: 90%; max-width: 110; height: 80%; border: thick $accent; background: $surface; padding: 0 1; }
    #picker-title { height: 1; color: $text-muted; }
    #picker-list { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "dismiss_none", "Back"), Binding("down", "focus_list", show=False)]

    def __init__(self, store: HistoryStore) -> None:
        super().__init__()
        self.store = store
        self.shown: list[Conversation] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static("Open a conversation: type to search its messages, Enter opens, Esc goes back",
                         id="picker-title")
            yield Input(placeholder="search…", id="picker-filter")
            yield OptionList(id="picker-list")

    def on_mount(self) -> None:
        self.refresh_list("")
        self.query_one(Input).focus()

    @on(Input.Changed, "#picker-filter")
    def _changed(self, event: Input.Changed) -> None:
        self.refresh_list(event.value)

    def refresh_list(self, words: str) -> None:
        try:
            self.shown = self.store.search(words, LIMIT) if words.strip() else self.store.conversations(LIMIT)
        except HistoryError as exc:
            self.notify(str(exc), severity="error")
            self.shown = []
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options([Option(label(c), id=str(c.id)) for c in self.shown])
        if self.shown:
            options.highlighted = 0
        elif words.strip():
            options.add_option(Option(Text("no conversation matches", style="dim"), disabled=True))

    @on(Input.Submitted, "#picker-filter")
    def _submitted(self) -> None:
        options = self.query_one(OptionList)
        if self.shown and options.highlighted is not None:
            self.dismiss(self.shown[options.highlighted].id)

    @on(OptionList.OptionSelected, "#picker-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    def action_focus_list(self) -> None:
        self.query_one(OptionList).focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
