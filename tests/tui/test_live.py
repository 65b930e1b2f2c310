"""The app on the real engine (embedded model, fp32, greedy, ngram drafter).

Each test drives the app with Pilot like a user and checks the screen against
the engine events the app received (recorded with `message_hook`).
"""

from __future__ import annotations

import time

import pytest

from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.loop.events import Round, TurnEnd, TurnStart
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.tui.app import make_app
from specchat.tui.messages import SessionReady
from specchat.tui.persist import latest_conversation, load_transcript
from specchat.tui.render import safe
from specchat.tui.themes import provenance_colors
from specchat.tui.widgets.chat import AnswerView
from specchat.tui.widgets.inspector import Inspector

from .conftest import SIZE

pytestmark = pytest.mark.slow


@pytest.fixture
def factory(embedded):
    def make(max_new_tokens: int = 12):
        settings = GenerationSettings(k=4, temperature=0.0, max_new_tokens=max_new_tokens)
        return lambda progress: ChatSession(embedded, NgramDrafter(), settings=settings)
    return make


async def wait_for(pilot, condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await pilot.pause(0.05)
    await pilot.pause(0.15)  # one repaint tick after the last message


async def ask(pilot, text: str) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.session is not None and not app.generating)
    before = len(app.session.history)
    await pilot.click("#prompt")
    await pilot.press(*text, "enter")
    if text.startswith("/"):  # a command runs at once, on the UI thread
        await pilot.pause(0.1)
    else:
        # A short answer can be over before the first poll: the turn in the history
        # (added when it starts) shows it began either way.
        await wait_for(pilot, lambda: app.generating or len(app.session.history) > before, timeout=30)


def recorder():
    """The events the engine yields to the chat screen, recorded on the relay thread."""
    events = []

    def hook(message):
        if isinstance(message, SessionReady):
            session = message.session
            send = session.send

            def recorded(text):
                for event in send(text):
                    events.append(event)
                    yield event
            session.send = recorded
    return events, hook


async def test_answer_spans_gauges_and_inspector_agree_with_engine_events(factory, tmp_path):
    events, hook = recorder()
    app = make_app(session_factory=factory(), data_dir=tmp_path)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await ask(pilot, "Repeat: one two three, one two three.")
        await wait_for(pilot, lambda: not app.generating)
        end = events[-1]
        assert isinstance(events[0], TurnStart) and isinstance(end, TurnEnd)
        rounds = [e for e in events if isinstance(e, Round)]
        view = app.query(AnswerView).last()
        # Provenance: each token span has the colour of what the engine said it was.
        assert view.rendered.plain == safe(end.text)
        colors = provenance_colors(app.current_theme)
        expected = []
        for r in rounds:
            expected += [("accepted", t.text) for t in r.accepted if t.text]
            if r.emitted is not None and r.emitted.text:
                expected.append((r.emitted.kind, r.emitted.text))
        shown = [(view.items[s.style.meta["token"]].kind, view.rendered.plain[s.start:s.end])
                 for s in view.rendered.spans]
        assert shown == [(k, safe(t)) for k, t in expected]
        for span in view.rendered.spans:
            kind = view.items[span.style.meta["token"]].kind
            assert span.style.color.get_truecolor().hex.lower() == colors[kind].lower()
        # Gauges: the engine's totals.
        gauges = str(app.query_one("#gauges").render())
        if end.totals.acceptance_rate is not None:
            assert f"{end.totals.acceptance_rate * 100:.0f}%" in gauges
        assert f"{end.totals.mean_tokens_per_round:.2f}" in gauges
        # The speedup: no figure until a plain round has timed the plain step (no warm-up
        # here), then an estimate against the step the newest round carries.
        plain = next((r.plain_step_s for r in reversed(rounds) if r.plain_step_s), None)
        assert ("no baseline yet" in gauges) if plain is None else (f"{1000 * plain:.1f} ms" in gauges)
        # Inspector: one row per round, drafted/emitted tokens of the highlighted one.
        await pilot.press("f2")
        await pilot.pause(0.1)
        inspector = app.query_one(Inspector)
        assert inspector.query_one("#rounds").row_count == len(rounds)
        tokens = inspector.query_one("#round-tokens")
        assert tokens.row_count == (len(rounds[0].drafted) + len(rounds[0].alternatives)
                                    + (rounds[0].emitted is not None))
    # Autosave: the file holds the prompt and exactly the events received.
    transcript, records = load_transcript(latest_conversation(tmp_path))
    assert records[1:] == events and transcript.answers[0].text == end.text


async def test_escape_stops_and_keeps_the_partial_answer(factory, tmp_path):
    app = make_app(session_factory=factory(max_new_tokens=300), data_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Tell me a long story about a lighthouse.")  # 300 tokens: long enough to stop
        await wait_for(pilot, lambda: len(app.transcript.current.rounds) >= 2)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.generating, timeout=30)
        answer = app.transcript.current
        assert answer.end.finish_reason == "cancelled" and answer.status == "stopped"
        assert 0 < answer.end.totals.tokens < 300 and answer.text
        view = app.query(AnswerView).last()
        assert "stopped" in str(view.query_one(".answer-header").render())
        assert view.rendered.plain == safe(answer.text)
        assert app.session.history[-1].content == answer.text
        assert app.session.history[-1].status == "cancelled"


async def test_speculation_toggle_theme_switch_export_and_settings(factory, tmp_path):
    events, hook = recorder()
    app = make_app(session_factory=factory(), data_dir=tmp_path)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await ask(pilot, "/spec off")
        await ask(pilot, "Say hello.")
        await wait_for(pilot, lambda: not app.generating)
        starts = [e for e in events if isinstance(e, TurnStart)]
        assert starts[-1].drafter == "none"
        assert all(not r.drafted for r in events if isinstance(r, Round))
        await ask(pilot, "/spec on")
        await ask(pilot, "Say hello again.")
        await wait_for(pilot, lambda: not app.generating)
        starts = [e for e in events if isinstance(e, TurnStart)]
        assert starts[-1].drafter == "ngram"
        # The spec-off turn is now the baseline the speedup gauge measures against.
        gauges = str(app.query_one("#gauges").render())
        assert "no baseline yet" not in gauges and "vs turn 1" in gauges

        await ask(pilot, "/theme light")
        await pilot.pause(0.2)
        assert app.theme == "specchat-light"
        light = provenance_colors(app.current_theme)
        view = app.query(AnswerView).last()
        kind = view.items[view.rendered.spans[0].style.meta["token"]].kind
        assert view.rendered.spans[0].style.color.get_truecolor().hex.lower() == light[kind].lower()

        out = tmp_path / "chat.md"
        await ask(pilot, f"/export {out}")
        await pilot.pause(0.1)
        text = out.read_text()
        ends = [e for e in events if isinstance(e, TurnEnd)]
        assert "Say hello." in text and "Say hello again." in text
        assert all(e.text in text for e in ends)
        assert "drafter none" in text and "drafter ngram" in text

        # Setting commands reach the next turn's settings.
        await ask(pilot, "/penalty 1.3")
        await ask(pilot, "/temp 0.5")
        await ask(pilot, "Say bye.")
        await wait_for(pilot, lambda: not app.generating)
        start = [e for e in events if isinstance(e, TurnStart)][-1]
        assert (start.repetition_penalty, start.temperature) == (1.3, 0.5)


async def test_resume_after_closing_mid_answer(factory, tmp_path):
    app = make_app(session_factory=factory(max_new_tokens=300), data_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Tell me a long story about a lighthouse.")
        await wait_for(pilot, lambda: len(app.transcript.current.rounds) >= 3)
        partial = app.transcript.current.text
    # Closed mid-answer: the file ends without (or with a cancelled) TurnEnd.
    app2 = make_app(session_factory=factory(max_new_tokens=8), resume=True, data_dir=tmp_path)
    async with app2.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app2.session is not None)
        answer = app2.transcript.answers[0]
        assert answer.user_text == "Tell me a long story about a lighthouse."
        assert answer.status in ("interrupted", "stopped") and answer.text.startswith(partial)
        view = app2.query(AnswerView).first()
        assert view.rendered.plain == safe(answer.text)
        history = app2.session.history
        assert [m.role for m in history] == ["user", "assistant"]
        assert history[1].content == answer.text and history[1].status == "cancelled"
        await ask(pilot, "Thanks.")
        await wait_for(pilot, lambda: not app2.generating)
        assert len(app2.transcript.answers) == 2 and app2.transcript.answers[1].end is not None
    transcript, _ = load_transcript(latest_conversation(tmp_path))
    assert [a.user_text for a in transcript.answers] == [answer.user_text, "Thanks."]


async def test_the_first_answer_shows_an_estimated_speedup_then_spec_off_a_measured_one(tiny_llama, tmp_path,
                                                                                       monkeypatch):
    """A tiny real pair, warmed up as the CLI's factory does, on its engine thread."""
    import threading

    import torch

    from specchat.engine.drafters.hf_model import ModelDrafter
    from specchat.engine.loop.events import estimated_speedup
    from specchat.engine.loop.host import THREAD_NAME
    from specchat.tui.widgets.gauges import Gauges
    from tests.engine.helpers import as_target, word_tokenizer

    target = as_target(tiny_llama(vocab_size=64, seed=0), word_tokenizer(64))
    drafter = ModelDrafter(tiny_llama(vocab_size=64, seed=0), name="copy", vocab_size=64)  # drafts the target

    def factory(progress):
        session = ChatSession(target, drafter, settings=GenerationSettings(k=None, max_new_tokens=200))
        session.warm_up(progress)
        return session

    # The gauges repaint once a second while streaming; a tiny model answers faster.
    monkeypatch.setattr("specchat.tui.repaint.STREAM_GAUGES_S", 0.0)
    monkeypatch.setattr("specchat.tui.pacing.MIN_S", 0.0)
    monkeypatch.setattr("specchat.tui.pacing.BUDGET", 1e9)
    shown = []  # (answer finished?, estimate) at every repaint of the gauges
    real_show = Gauges.show
    monkeypatch.setattr(Gauges, "show", lambda self, values, info, colors: (
        shown.append((app.transcript.current is not None and app.transcript.current.done, values.estimate)),
        real_show(self, values, info, colors)))
    threads = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: threads.append(threading.current_thread().name))
    try:
        app = make_app(session_factory=factory, data_dir=tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ask(pilot, "t1 t2 t3 t4")
            await wait_for(pilot, lambda: not app.generating)
            answer = app.transcript.current
            values = app.query_one(Gauges).values
            assert values.baseline is None
            # against the plain step as the newest round knew it (warm-up, then the plain rounds)
            assert values.estimate == estimated_speedup(answer.totals, answer.rounds[-1].plain_step_s)
            assert values.estimate is not None
            gauges = str(app.query_one("#gauges").render())
            assert f"≈{values.estimate:.2f}× estimate" in gauges
            assert any(not done and estimate is not None for done, estimate in shown)  # while it streamed

            app.session.settings.max_new_tokens = 40  # three long turns would outgrow the tiny context
            await ask(pilot, "/spec off")
            await ask(pilot, "t5 t6")
            await wait_for(pilot, lambda: not app.generating)
            await ask(pilot, "/spec on")
            await ask(pilot, "t7 t8")
            await wait_for(pilot, lambda: not app.generating)
            gauges = str(app.query_one("#gauges").render())
            assert "measured" in gauges and "vs turn 2" in gauges and "estimate" not in gauges
    finally:
        hook.remove()
    assert threads and set(threads) == {THREAD_NAME}  # warm-up and every turn on the engine thread
