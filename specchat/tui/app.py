"""The specchat Textual app, its factory, and the two entry points the CLI calls.

    run_tui(session_factory, *, theme=None, resume=False, data_dir=None) -> int
    run_replay(trace_path, *, theme=None) -> int

Threads: every torch call runs on the session's engine thread (engine/loop/host.py):
the factory loads and warms up there, and each turn's events come from there. A
thread worker relays them into an `EventInbox`; the repaint timer folds what
waits there into the `Transcript` and the autosave file, one batch a tick, and
repaints the changed widgets (paced while streaming, tui/pacing.py), so a fast
stream never starves keyboard input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

from textual import on, work
from textual.worker import get_current_worker
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static

from specchat.engine.loop.events import TurnStart
from specchat.engine.loop.host import EngineHost

from . import commands
from .chat_commands import CommandsMixin
from .conversations import ConversationsMixin
from .exporting import ExportsMixin
from .loading import LoadCancelled, wait_for_load
from .messages import EngineFailed, EventInbox, GenerationDone, LoadFailed, LoadProgress, SessionReady
from .pacing import RepaintPacer
from .persist import TraceError, load_transcript, read_records
from .render import legend
from .stats import compute
from .sysinfo import memory_text
from .themes import DEFAULT_THEME, load_themes, provenance_colors, resolve_theme_arg
from .transcript import Answer, Prompt, Record, SystemPrompt, Transcript
from .waiting import WaitingPrompt
from .widgets.chat import AnswerView, ChatView, UserMessage
from .widgets.gauges import Gauges, RunInfo
from .widgets.inspector import Inspector
from .widgets.prompt import PromptInput

# session_factory(progress) -> ChatSession; progress takes one-line loading messages.
SessionFactory = Callable[[Callable[[str], None]], object]
REPAINT_S = 1 / 15  # how often the timer looks for something to repaint
# While an answer streams, the answer repaints as often as pacing.py's CPU budget
# allows and the gauges at most once a second; everything repaints when it ends.
STREAM_GAUGES_S = 1.0


class SpecChatApp(ConversationsMixin, CommandsMixin, ExportsMixin, App):
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

    # ---- records → transcript → widgets ---------------------------------------

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

    # ---- loading and running the engine --------------------------------------

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
