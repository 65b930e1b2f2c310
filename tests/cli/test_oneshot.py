"""The one-shot printer, driven by hand-made events (no model): what reaches stdout."""

from __future__ import annotations

import _thread
import io
import json
import signal
import threading

import pytest

from specchat.engine.loop.events import DraftedToken, EmittedToken, Round, Totals, TurnEnd, TurnStart, event_from_json
from specchat.engine.loop.host import EngineHost
from specchat.oneshot import (
    EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, AnswerWriter, Options, neutralize, result_json, run_turn, stats_line,
    use_color,
)

ESC = "\x1b"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _round(index: int, drafted: list[tuple[str, bool]], emitted: str | None, kind: str = "correction") -> Round:
    return Round(turn=1, index=index, k=len(drafted),
                 drafted=[DraftedToken(token_id=i, text=t, p=1.0, q=0.5, accepted=a) for i, (t, a) in enumerate(drafted)],
                 emitted=EmittedToken(token_id=99, text=emitted, kind=kind, q=0.9) if emitted is not None else None,
                 draft_time_s=0.001, verify_time_s=0.01)


ROUNDS = [
    _round(0, [("Hello", True), (" there", False)], ",", "correction"),
    _round(1, [(" world", True), ("!", True)], "\n", "bonus"),
    _round(2, [], f"{ESC}]0;pwned{ESC}\\done\r", "target"),
]
TEXT = "".join(r.text for r in ROUNDS)


def _start() -> TurnStart:
    return TurnStart(turn=1, target="tiny", drafter="ngram", device="cpu", k="auto", temperature=0.0, top_p=1.0,
                     top_k=0, max_new_tokens=16, prompt_tokens=5, reused_tokens=0, prefill_time_s=0.01, user_text="hi")


def _end(reason: str = "eos", error: str | None = None) -> TurnEnd:
    totals = Totals()
    for r in ROUNDS:
        totals.add_round(r)
    totals.elapsed_s = 0.5
    return TurnEnd(turn=1, finish_reason=reason, text=TEXT, totals=totals, error=error)


_HOST = EngineHost()  # one engine thread for the module's scripted sessions


class ScriptedSession:
    """Plays a fixed event list through the real run_turn loop, produced on an engine
    thread as a ChatSession's are (engine/loop/host.py)."""

    def __init__(self, events, interrupt_after: int | None = None):
        self.events = events
        self.interrupt_after = interrupt_after
        self.cancelled = False
        self._cancel_seen = threading.Event()

    def send(self, text):
        return _HOST.stream(lambda: self._events(text), on_close=self.cancel)

    def _events(self, text):
        for i, event in enumerate(self.events):
            if self.cancelled:
                break
            yield event
            if i == self.interrupt_after:
                _thread.interrupt_main()  # the user's Ctrl+C, delivered to the main thread
                # Wait without holding the GIL (a spinning loop starved the main thread
                # on a busy machine and hung the run); bounded, so a bug fails the test.
                self._cancel_seen.wait(timeout=30)
        if self.cancelled:
            yield TurnEnd(turn=1, finish_reason="cancelled", text="partial")

    def cancel(self):
        self.cancelled = True
        self._cancel_seen.set()


def test_neutralize_shows_control_sequences_instead_of_obeying_them():
    hostile = f"a{ESC}[31mred{ESC}]8;;http://x{ESC}\\link\rover\x07\x9b2J\u202eevil\tok\nnext"
    safe = neutralize(hostile)
    assert not any(ord(c) < 0x20 and c not in "\t\n" for c in safe)
    assert not any(0x7F <= ord(c) < 0xA0 for c in safe) and "\u202e" not in safe
    assert "␛[31mred" in safe and "␍over" in safe and "\tok\nnext" in safe
    assert neutralize("naïve — 日本語 🙂") == "naïve — 日本語 🙂"


def test_piped_output_is_the_exact_text_and_json_matches_it():
    out, err = io.StringIO(), io.StringIO()
    code = run_turn(ScriptedSession([_start(), *ROUNDS, _end()]), "hi", Options(), out, err)
    assert code == EXIT_OK
    assert out.getvalue() == TEXT  # control characters too: a pipe gets the model's text unchanged
    assert err.getvalue() == ""

    out = io.StringIO()
    run_turn(ScriptedSession([_start(), *ROUNDS, _end()]), "hi", Options(json=True), out, err)
    result = json.loads(out.getvalue())
    assert result["text"] == TEXT
    assert set(result) == {"text", "finish_reason", "target", "drafter", "device", "weights", "kv_cache", "stats"}
    assert set(result["stats"]) == {"tokens", "rounds", "drafted", "accepted", "acceptance_rate",
                                    "mean_tokens_per_round", "tokens_per_s", "alternatives",
                                    "alternatives_accepted", "speedup_estimate", "plain_step_s"}
    assert result["stats"]["drafted"] == 4 and result["stats"]["accepted"] == 3
    assert result["stats"]["tokens"] == 6 and result["stats"]["rounds"] == 3


def test_terminal_output_is_coloured_and_neutralised():
    out = Terminal()
    code = run_turn(ScriptedSession([_start(), *ROUNDS, _end()]), "hi", Options(color="auto"), out, io.StringIO())
    assert code == EXIT_OK
    shown = out.getvalue()
    assert f"{ESC}[32mHello" in shown  # accepted draft: green
    assert "pwned" in shown and f"{ESC}]0;pwned" not in shown and "␛]0;pwned" in shown
    assert "\r" not in shown and " there" not in shown  # rejected drafts only with --show-rejected
    assert shown.endswith("\n")


def test_show_rejected_strikes_them_through_in_place():
    out = Terminal()
    writer = AnswerWriter(out, color=True, sanitize=True, show_rejected=True)
    writer.round(ROUNDS[0])
    shown = out.getvalue()
    assert shown.index("Hello") < shown.index(" there") < shown.index(",")
    assert f"{ESC}[2;9;31m there" in shown  # dim, strike, red


def test_show_rejected_without_colour_leaves_the_text_alone():
    out = io.StringIO()
    writer = AnswerWriter(out, color=False, sanitize=False, show_rejected=True)
    for r in ROUNDS:
        writer.round(r)
    assert out.getvalue() == TEXT


@pytest.mark.parametrize("choice, tty, no_color, expected", [
    ("auto", True, "", True), ("auto", True, "1", False), ("auto", False, "", False),
    ("always", False, "1", True), ("never", True, "", False),
])
def test_colour_choice(choice, tty, no_color, expected):
    stream = Terminal() if tty else io.StringIO()
    assert use_color(choice, stream, {"NO_COLOR": no_color} if no_color else {}) is expected


def test_stats_line_and_trace(tmp_path):
    trace = tmp_path / "trace.jsonl"
    out, err = io.StringIO(), io.StringIO()
    run_turn(ScriptedSession([_start(), *ROUNDS, _end()]), "hi", Options(stats=True, trace=str(trace)), out, err)
    line = err.getvalue()
    assert line.count("\n") == 1
    assert stats_line(_start(), _end()) + "\n" == line
    assert "6 tokens" in line and "12.0 tok/s" in line and "acceptance 75%" in line and "2.00 tokens/round" in line
    events = [event_from_json(l) for l in trace.read_text().splitlines()]
    assert [e.type for e in events] == ["turn_start", "round", "round", "round", "turn_end"]
    assert events[1:4] == ROUNDS


def test_engine_error_is_exit_1_with_one_line():
    out, err = io.StringIO(), io.StringIO()
    end = _end("error", "RuntimeError: boom\nsecond line")
    code = run_turn(ScriptedSession([_start(), ROUNDS[0], end]), "hi", Options(json=True), out, err)
    assert code == EXIT_ERROR
    assert err.getvalue().startswith("specchat: error: RuntimeError: boom")
    assert json.loads(out.getvalue())["error"].startswith("RuntimeError")
    assert result_json(_start(), end)["finish_reason"] == "error"


def test_ctrl_c_cancels_keeps_what_was_printed_and_exits_130():
    out = io.StringIO()
    session = ScriptedSession([_start(), *ROUNDS, _end()], interrupt_after=1)
    # A process started with SIGINT ignored (a background CI job) never raises
    # KeyboardInterrupt; a terminal user's has Python's default handler, so this does too.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = run_turn(session, "hi", Options(), out, io.StringIO())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert session.cancelled
    assert code == EXIT_INTERRUPTED
    assert out.getvalue() == ROUNDS[0].text


def test_an_accepted_alternative_is_printed_in_its_place():
    # A turn recorded from the real engine with alternatives (tests/tui/record_trace.py).
    from pathlib import Path

    trace = Path(__file__).parent.parent / "tui" / "traces" / "alternatives.jsonl"
    events = [event_from_json(line) for line in trace.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert any(a.accepted for e in events if isinstance(e, Round) for a in e.alternatives)
    out, err = io.StringIO(), io.StringIO()
    run_turn(ScriptedSession(events), "hi", Options(), out, err)
    assert out.getvalue() == events[-1].text
