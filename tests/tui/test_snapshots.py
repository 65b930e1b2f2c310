"""What the screen looks like, replaying the committed trace recorded from the real
engine (so every figure on screen is a recorded one and the pictures are stable)."""

from __future__ import annotations

from specchat.tui.app import make_app

from .conftest import SIZE, TRACE


async def _settle(pilot) -> None:
    await pilot.pause(0.3)


def test_main_screen(snap_compare):
    assert snap_compare(make_app(trace=TRACE), terminal_size=SIZE, run_before=_settle)


def test_rejected_drafts_inline_light_theme(snap_compare):
    async def run_before(pilot):
        await _settle(pilot)
        await pilot.press("f3")
        await pilot.pause(0.2)

    assert snap_compare(make_app(trace=TRACE, theme="light"), terminal_size=SIZE, run_before=run_before)


def test_inspector_on_a_rejection(snap_compare):
    async def run_before(pilot):
        await _settle(pilot)
        app = pilot.app
        answers = app.transcript.answers
        # The ngram turn: open its first round with a rejected draft.
        index = next(i for i, a in enumerate(answers) if a.start and a.start.drafter == "ngram")
        row = next(i for i, r in enumerate(answers[index].rounds) if any(not t.accepted for t in r.drafted))
        from specchat.tui.widgets.chat import AnswerView

        view = list(app.query(AnswerView))[index]
        app._open_inspector(view, row)
        await pilot.pause(0.2)

    assert snap_compare(make_app(trace=TRACE, theme="colorblind"), terminal_size=SIZE, run_before=run_before)


def test_readme_screen(snap_compare):
    """The README's picture (docs/chat-screen.svg): a first answer of the default path,
    its speedup shown as an estimate."""
    trace = TRACE.parent / "readme.jsonl"

    async def run_before(pilot):
        await _settle(pilot)
        assert "estimate" in str(pilot.app.query_one("#gauges").render())

    assert snap_compare(make_app(trace=trace), terminal_size=SIZE, run_before=run_before)
