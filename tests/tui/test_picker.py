"""The conversation picker (Ctrl+O) on the real engine: a conversation kept by one
app is found by a word of its answer in another, opened without reloading the
models, and goes on there."""

from __future__ import annotations

import pytest

from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.history.opening import open_history
from specchat.tui.app import make_app
from specchat.tui.picker import ConversationPicker
from specchat.tui.render import safe
from specchat.tui.widgets.chat import AnswerView, UserMessage

from .conftest import SIZE
from .test_live import ask, wait_for

pytestmark = pytest.mark.slow


async def test_ctrl_o_finds_a_conversation_by_its_text_and_goes_on_with_it_on_the_same_models(embedded, tmp_path):
    built = []

    def factory(progress):
        built.append(ChatSession(embedded, NgramDrafter(), settings=GenerationSettings(k=4, max_new_tokens=12)))
        return built[-1]

    first = make_app(session_factory=factory, data_dir=tmp_path)
    async with first.run_test(size=SIZE) as pilot:
        await ask(pilot, "Describe a lighthouse.")
        await wait_for(pilot, lambda: not first.generating)
        kept = first.transcript.answers[0]
    word = next(w for w in kept.text.split() if len(w) > 4 and w.isalpha())

    app = make_app(session_factory=factory, data_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Say hello.")
        await wait_for(pilot, lambda: not app.generating)
        session = app.session
        await pilot.press("ctrl+o")
        await pilot.pause(0.2)
        picker = app.screen
        assert isinstance(picker, ConversationPicker)
        assert [c.title for c in picker.shown] == ["Say hello.", "Describe a lighthouse."]  # newest first
        await pilot.press(*word[:5])
        await pilot.pause(0.2)
        assert [c.title for c in picker.shown] == ["Describe a lighthouse."]
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConversationPicker)
        # Shown from its round trace, as it was; the session has its turns; no model reloaded.
        assert [a.user_text for a in app.transcript.answers] == ["Describe a lighthouse."]
        assert app.transcript.answers[0].rounds == kept.rounds
        assert app.query(AnswerView).first().rendered.plain == safe(kept.text)
        assert [m.text for m in app.query(UserMessage)] == ["Describe a lighthouse."]
        assert app.session is session and len(built) == 2  # one session per app, none for the picker
        assert [m.content for m in session.history] == ["Describe a lighthouse.", kept.text]
        await ask(pilot, "Thanks.")
        await wait_for(pilot, lambda: not app.generating)
        assert app.transcript.answers[1].end is not None
    store, _ = open_history(tmp_path)
    lighthouse = next(c for c in store.conversations() if c.title == "Describe a lighthouse.")
    assert [t.prompt for t in store.turns(lighthouse.id)] == ["Describe a lighthouse.", "Thanks."]
    assert len(store.conversations()) == 2
