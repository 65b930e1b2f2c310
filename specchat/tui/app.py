"""The specchat Textual app, its factory, and the two entry points the CLI calls.

    run_tui(session_factory, *, theme=None, resume=False, data_dir=None) -> int
    run_replay(trace_path, *, theme=None) -> int

The app is its layout and lifecycle; its jobs are mixins, one module each: the
engine link (engine_link.py: load, send, relay a turn's events from the engine
thread), the repaint (repaint.py: events -> transcript -> widgets, paced so a fast
stream never starves keyboard input), chat commands (chat_commands.py), exports
(exporting.py) and stored conversations (conversations.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from specchat.engine.loop.events import TurnStart
from specchat.engine.loop.host import EngineHost

from . import commands
from .chat_commands import CommandsMixin
from .conversations import ConversationsMixin
from .engine_link import EngineLinkMixin
from .exporting import ExportsMixin
from .messages import EventInbox
from .pacing import RepaintPacer
from .persist import ConversationLog, TraceError, load_transcript, read_records
from .repaint import RepaintMixin
from .themes import DEFAULT_THEME, load_themes, provenance_colors, resolve_theme_arg
from .transcript import Record, Transcript
from .waiting import WaitingPrompt
from .widgets.chat import AnswerView, ChatView
from .widgets.gauges import Gauges, RunInfo
from .widgets.inspector import Inspector
from .widgets.prompt import PromptInput

# session_factory(progress) -> ChatSession; progress takes one-line loading messages.
SessionFactory = Callable[[Callable[[str], None]], object]
REPAINT_S = 1 / 15  # how often the timer looks for something to repaint


class SpecChatApp(EngineLinkMixin, RepaintMixin, ConversationsMixin, CommandsMixin, ExportsMixin, App):
    CSS_PATH = "app.tcss"
    TITLE = "specchat"
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+o", "open_history", "Open"),
        Binding("f2", "toggle_inspector", "Inspector"),
        Binding("f3", "toggle_rejected", "Rejected"),
        Binding("f4", "toggle_markdown", "Markdown"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        *,
        session_factory: SessionFactory | None = None,
        records: list[Record] | None = None,
        source: str = "",
        resume: str | None = None,
        data_dir: Path | None = None,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        self.session_factory = session_factory
        self.replay = session_factory is None
        self.source = source
        self.data_dir = data_dir
        self.session = None
        self.host: EngineHost | None = None
        self.load_error: str | None = None  # why the models did not load
        self._waiting: WaitingPrompt | None = None  # the message sent while they load
        self.generating = False
        self.show_rejected = False
        self.markdown_all = False
        self.transcript = Transcript()
        self.log_file: ConversationLog | None = None
        self._initial = list(records or [])
        self._resume = resume  # "last" or a conversation id: reopen it from the history
        self.conversation_title = ""
        self._spec_drafter = None  # the drafter to restore on /spec on
        self.info = RunInfo(mode="replay" if self.replay else "live")
        self._inbox = EventInbox()
        self._mounted = 0  # answer views in the chat
        self._views: list[AnswerView] = []  # those views, in order (a query would also find ones being removed)
        self._dirty: set[int] = set()  # answer indices to repaint
        self._gauges_dirty = True
        self._pacer = RepaintPacer()
        self._gauges_at = 0.0  # time.monotonic() of the gauges' last repaint
        load = load_themes()
        self._theme_load = load
        for t in load.themes.values():
            self.register_theme(t)
        name, self._theme_warning = resolve_theme_arg(theme, load)
        for t in load.themes.values():  # a theme file given by path joined `load`
            if t.name not in self.available_themes:
                self.register_theme(t)
        if name not in self.available_themes:
            name = "textual-dark"
        self.theme = name

    # ---- layout -------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Static(id="status")
                yield ChatView(id="chat")
                yield Inspector(id="inspector")
                yield Static(id="legend")
                yield PromptInput(id="prompt")
            yield Gauges(id="gauges")
        yield Footer()

    @property
    def prov_colors(self) -> dict[str, str]:
        return provenance_colors(self.current_theme)

    def on_mount(self) -> None:
        for failure in self._theme_load.failures:
            self.notify(f"theme not loaded: {failure}", severity="warning", timeout=8)
        if self._theme_warning:
            self.notify(self._theme_warning, severity="warning", timeout=8)
        self.theme_changed_signal.subscribe(self, lambda _theme: self._repaint_all())
        prompt = self.query_one(PromptInput)
        for record in self._initial:
            self._fold(record, log=False)
        self.transcript.finish()
        if self.replay:
            prompt.display = False
            self._set_status(f"replay · {self.source} · {len(self.transcript.answers)} turns")
            start = self._latest_start()
            if start:
                self.info.target, self.info.drafter, self.info.device = start.target, start.drafter, start.held_on()
            self.info.memory = "— (no model loaded)"
            views = self.query(AnswerView)
            if views:
                views.last().focus()
        else:
            self._open_store()
            found = self._find_conversation(self._resume) if self._resume is not None else None
            if found is not None:
                self._show_conversation(found)
            else:
                self._start_log()
            self._waiting = WaitingPrompt(self.query_one(ChatView), prompt)
            prompt.focus()  # type away: a message sent now is answered once the models are ready
            self._set_status("loading models…")
            self._load_session()
            self.set_interval(2.0, self._sample_memory)
        self.set_interval(REPAINT_S, self._paint_dirty)
        self._repaint_all()

    def _latest_start(self) -> TurnStart | None:
        starts = [a.start for a in self.transcript.answers if a.start]
        return starts[-1] if starts else None

    def _set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    @on(PromptInput.Submitted)
    def _on_submit(self, message: PromptInput.Submitted) -> None:
        try:
            command = commands.parse(message.text)
        except commands.CommandError as exc:
            self.notify(str(exc), severity="error")
            return
        if command is not None:
            self.run_command(command)
            return
        self.send(commands.prompt_text(message.text))

    def on_unmount(self) -> None:
        if self.session is not None and self.generating:
            self.session.cancel()
        if self.host is not None:
            self.host.close(timeout=2.0)
        self._close_log()  # the answer so far stays in the trace and the store
        if self.store is not None:
            self.store.close()

    # ---- actions and commands ------------------------------------------------

    def action_stop(self) -> None:
        if self.generating and self.session is not None:
            self.session.cancel()
            self._set_status("stopping…")
        elif self._waiting is not None and self._waiting.give_back() is not None:
            self.notify("the waiting message is back in the box")

    def action_toggle_rejected(self) -> None:
        self.show_rejected = not self.show_rejected
        self._repaint_all()

    def action_toggle_markdown(self) -> None:
        self.markdown_all = not self.markdown_all
        for view in self.query(AnswerView):
            view.markdown = self.markdown_all and view.answer.done
        self._repaint_all()

    def action_toggle_inspector(self) -> None:
        inspector = self.query_one(Inspector)
        if inspector.display:
            inspector.display = False
            return
        view = self.focused if isinstance(self.focused, AnswerView) else None
        views = list(self.query(AnswerView))
        if view is None and views:
            view = views[-1]
        if view is None:
            self.notify("no answer to inspect yet", severity="warning")
            return
        self._open_inspector(view, None)

    def _open_inspector(self, view: AnswerView, round_index: int | None) -> None:
        inspector = self.query_one(Inspector)
        inspector.display = True
        inspector.show(view.answer, view.index + 1, self.prov_colors, round_index)
        inspector.query_one("#rounds").focus()

    @on(AnswerView.TokenSelected)
    def _on_token(self, message: AnswerView.TokenSelected) -> None:
        view = message.view
        self._dirty.add(view.index)
        inspector = self.query_one(Inspector)
        if message.round_index < 0:
            self._paint_dirty(now=True)
            return
        if message.open:
            self._open_inspector(view, message.round_index)
            view.focus()
        elif inspector.display:
            inspector.show(view.answer, view.index + 1, self.prov_colors, message.round_index)
        self._paint_dirty(now=True)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Inspector", "Show or hide the round inspector", self.action_toggle_inspector)
        yield SystemCommand("Rejected drafts", "Show or hide rejected draft tokens", self.action_toggle_rejected)
        yield SystemCommand("Markdown view", "Finished answers as Markdown or provenance", self.action_toggle_markdown)
        yield SystemCommand("Export Markdown", "Save the conversation as Markdown", self.export_markdown)
        yield SystemCommand("Export trace", "Save the event stream for specchat replay", self.export_trace)
        if not self.replay:
            yield SystemCommand("Open conversation…", "Pick a stored conversation to go on with (Ctrl+O)",
                                self.action_open_history)
        if not self.replay and self.session is not None:
            yield SystemCommand("Speculation on/off", "Toggle the drafter (off = baseline)",
                                lambda: self.run_command(commands.Command("spec")))
            yield SystemCommand("Clear conversation", "Start a new conversation",
                                lambda: self.run_command(commands.Command("clear")))


def make_app(
    *,
    session_factory: SessionFactory | None = None,
    trace: Path | None = None,
    resume: bool | str | None = None,
    data_dir: Path | None = None,
    theme: str | None = None,
) -> SpecChatApp:
    """The one way to build the app (CLI and tests). Live when `session_factory`
    is given, replay of `trace` otherwise. Raises TraceError for an unreadable trace."""
    if session_factory is None:
        if trace is None:
            raise ValueError("make_app needs a session_factory or a trace")
        _, records = load_transcript(trace)
        # The file name, not the full path: it fits the status line (and keeps the
        # snapshots independent of where the repository lives).
        return SpecChatApp(records=records, source=Path(trace).name, theme=theme)
    wanted = "last" if resume is True else (str(resume) if resume not in (None, False) else None)
    return SpecChatApp(session_factory=session_factory, resume=wanted, data_dir=data_dir, theme=theme)


def run_tui(
    session_factory: SessionFactory,
    *,
    theme: str | None = None,
    resume: bool | str | None = None,
    data_dir: Path | None = None,
) -> int:
    """Run the chat TUI; returns the exit code.

    session_factory(progress) -> ChatSession is called in a worker thread once the
    screen is up, so model loading shows progress (call `progress("…")` with one-line
    messages). Exceptions it raises are shown as a one-line error in the app.
    theme: a theme name (``dark``/``light``/``colorblind`` or ``specchat-…``) or a
    path to a theme JSON file; unusable → message in the app, default theme.
    resume: reopen a stored conversation: "last" (or True) the most recent, else its id.
    data_dir: where conversations/ and exports/ go (default: platformdirs user data dir).
    """
    app = make_app(session_factory=session_factory, resume=resume, data_dir=data_dir, theme=theme)
    app.run()
    return app.return_code or 0


def run_replay(trace_path: str | Path, *, theme: str | None = None) -> int:
    """Open a trace (JSON lines of engine events, e.g. from `--trace` or /trace) in
    the chat view, gauges and inspector, without loading a model. Raises
    `specchat.tui.persist.TraceError` (one-line message) when the file cannot be read
    or holds no events."""
    if next(read_records(Path(trace_path)), None) is None:
        raise TraceError(f"{trace_path}: no specchat events in this file")
    app = make_app(trace=Path(trace_path), theme=theme)
    app.run()
    return app.return_code or 0


__all__ = ["SpecChatApp", "TraceError", "make_app", "run_replay", "run_tui", "DEFAULT_THEME"]
