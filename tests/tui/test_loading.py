"""Typing while the models load: the prompt takes text, one message sent then waits
on screen and is answered by the real engine once the session is ready; a failed
load gives the text back; Esc, Ctrl+Q and the chat commands work meanwhile.

The factories hold the load on an Event (released by the test) before they build
the real session, or load a real model that does not exist.
"""

from __future__ import annotations

import threading

import pytest

from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.tui.app import make_app
from specchat.tui.loading import LoadCancelled
from specchat.tui.render import safe
from specchat.tui.widgets.chat import WAITING, AnswerView, UserMessage
from specchat.tui.widgets.prompt import PromptInput

from .conftest import SIZE
from .test_live import wait_for

pytestmark = pytest.mark.slow


def held_factory(embedded, release: threading.Event):
    def factory(progress):
        progress("loading models…")
        assert release.wait(120), "the test never released the load"
        return ChatSession(embedded, NgramDrafter(), settings=GenerationSettings(k=4, max_new_tokens=12))
    return factory


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def type_and_send(pilot, text: str) -> None:
    await pilot.press(*text, "enter")
    await pilot.pause(0.1)


async def test_a_message_sent_while_loading_waits_then_the_engine_answers_it(embedded, tmp_path):
    release = threading.Event()
    app = make_app(session_factory=held_factory(embedded, release), data_dir=tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            prompt = app.query_one(PromptInput)
            assert app.session is None and not prompt.disabled and app.focused is prompt
            await type_and_send(pilot, "Say hello.")
            waiting = [m for m in app.query(UserMessage) if m.waiting]
            assert [m.text for m in waiting] == ["Say hello."]
            assert WAITING in str(waiting[0].render())
            assert app.transcript.answers == [] and prompt.text == ""
            # A second message stays in the box; the first keeps its place.
            await type_and_send(pilot, "And bye.")
            assert prompt.text == "And bye."
            assert [m.text for m in app.query(UserMessage) if m.waiting] == ["Say hello."]
            # Commands without the engine run; the others say why not.
            prompt.clear()
            await type_and_send(pilot, "/clear")
            assert any("models are still loading" in n for n in notes(app))
            await type_and_send(pilot, "/help")
            assert any("/theme" in n for n in notes(app))
            await type_and_send(pilot, "/theme light")
            assert app.theme == "specchat-light"

            release.set()
            await wait_for(pilot, lambda: app.transcript.current is not None and app.transcript.current.done)
            answer = app.transcript.answers[0]
            assert answer.user_text == "Say hello." and answer.end is not None and answer.text
            assert answer.end.finish_reason in ("eos", "length", "stop")
            assert not [m for m in app.query(UserMessage) if m.waiting]
            assert [m.text for m in app.query(UserMessage)] == ["Say hello."]
            assert app.query(AnswerView).last().rendered.plain == safe(answer.text)
            assert app.session.history[0].content == "Say hello."
    finally:
        release.set()


async def test_esc_takes_the_waiting_message_back_and_ctrl_q_quits_mid_load(embedded, tmp_path):
    seen = []  # what the engine thread's load saw after the app quit

    def factory(progress):
        try:
            while True:  # a load that reports progress until it is stopped
                progress("converting…")
                threading.Event().wait(0.02)
        except LoadCancelled:
            seen.append("cancelled")
            raise

    app = make_app(session_factory=factory, data_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await type_and_send(pilot, "First question")
        assert [m.text for m in app.query(UserMessage) if m.waiting] == ["First question"]
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert app.query_one(PromptInput).text == "First question"
        assert not list(app.query(UserMessage))
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
    assert app.return_code in (0, None) and app.session is None
    app.host.thread.join(30)
    assert seen == ["cancelled"] and not app.host.thread.is_alive()


async def test_a_failed_load_says_so_and_gives_the_typed_text_back(tmp_path):
    from specchat.models import load_target

    release = threading.Event()

    def factory(progress):
        assert release.wait(120)
        return load_target(str(tmp_path / "no-such-model"), device="cpu")

    app = make_app(session_factory=factory, data_dir=tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            await type_and_send(pilot, "Will this be lost?")
            await pilot.press(*"half typed")
            release.set()
            await wait_for(pilot, lambda: app.load_error is not None, timeout=60)
            prompt = app.query_one(PromptInput)
            assert prompt.text == "Will this be lost?\nhalf typed"
            assert not list(app.query(UserMessage))
            assert "could not load models" in str(app.query_one("#status").render())
            assert any("back in the box" in n for n in notes(app))
            # Sending again keeps it too, with the reason.
            prompt.clear()
            await type_and_send(pilot, "Again")
            assert prompt.text == "Again"
            assert any("did not load" in n for n in notes(app))
    finally:
        release.set()
