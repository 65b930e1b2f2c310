"""Replay of a trace recorded from the real engine: the views agree with its events."""

from __future__ import annotations

from specchat.engine.loop.events import Round, TurnEnd
from specchat.tui.app import make_app
from specchat.tui.render import safe
from specchat.tui.themes import provenance_colors
from specchat.tui.widgets.chat import AnswerView
from specchat.tui.widgets.inspector import Inspector, verdicts

from .conftest import SIZE, TRACE


def style_color(span) -> str:
    return span.style.color.get_truecolor().hex.lower()


async def test_replay_shows_every_token_with_its_provenance(trace_events):
    app = make_app(trace=TRACE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        views = list(app.query(AnswerView))
        ends = [e for e in trace_events if isinstance(e, TurnEnd)]
        assert len(views) == len(ends)
        colors = provenance_colors(app.current_theme)
        for view, end in zip(views, ends):
            assert view.rendered.plain == safe(end.text)
            kinds = []
            for span in view.rendered.spans:
                token = span.style.meta["token"]
                piece = view.items[token]
                assert style_color(span) == colors[piece.kind].lower()
                assert view.rendered.plain[span.start:span.end] == safe(piece.text)
                kinds.append(piece.kind)
            rounds = view.answer.rounds
            # Every token with text has its own span: accepted drafts and the target's tokens.
            assert kinds.count("accepted") == sum(1 for r in rounds for t in r.accepted if t.text)
            emitted = [r.emitted for r in rounds if r.emitted is not None and r.emitted.text]
            assert len(kinds) - kinds.count("accepted") == len(emitted)
        # Rejected drafts appear inline, struck through, only when asked for.
        await pilot.press("f3")
        await pilot.pause(0.2)
        view = next(v for v in views if any(not t.accepted for r in v.answer.rounds for t in r.drafted))
        rejected = [r for r in view.answer.rounds if any(not t.accepted for t in r.drafted)]
        struck = [s for s in view.rendered.spans if s.style.strike]
        assert rejected and len(struck) == sum(
            1 for r in rejected for t in r.drafted if not t.accepted)


async def test_gauges_show_the_engine_totals(trace_events):
    app = make_app(trace=TRACE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        text = str(app.query_one("#gauges").render())
        last = [e for e in trace_events if isinstance(e, TurnEnd)][-1]
        assert f"{last.totals.acceptance_rate * 100:.0f}%" in text
        assert f"{last.totals.mean_tokens_per_round:.2f}" in text
        assert f"{last.totals.tokens_per_s:.1f} this turn" in text
        assert "speedup" in text and "no baseline yet" not in text  # turn 1 ran with spec off


async def test_inspector_rows_follow_the_rounds(trace_events):
    app = make_app(trace=TRACE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        # The inspector opens on the focused answer: the one with rejected drafts.
        view = next(v for v in app.query(AnswerView) if any(not t.accepted for r in v.answer.rounds for t in r.drafted))
        view.focus()
        await pilot.press("f2")
        await pilot.pause(0.1)
        inspector = app.query_one(Inspector)
        rounds_table = inspector.query_one("#rounds")
        last_rounds = view.answer.rounds
        assert rounds_table.row_count == len(last_rounds)
        target = next(i for i, r in enumerate(last_rounds) if any(not t.accepted for t in r.drafted))
        for _ in range(target):
            await pilot.press("down")
        await pilot.pause(0.1)
        tokens = inspector.query_one("#round-tokens")
        r = last_rounds[target]
        assert tokens.row_count == len(r.drafted) + (r.emitted is not None)
        for row, (t, verdict) in enumerate(zip(r.drafted, verdicts(r))):
            cells = tokens.get_row_at(row)
            assert cells[3] == f"{t.p:.3f}" and cells[4] == f"{t.q:.3f}"
            assert cells[5].plain == verdict
        assert "rejected" in [c.plain for c in tokens.get_column_at(5)]


async def test_selecting_a_token_opens_its_round():
    app = make_app(trace=TRACE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        view = app.query(AnswerView).last()
        view.focus()
        for _ in range(7):
            await pilot.press("right")
        await pilot.press("enter")
        await pilot.pause(0.1)
        inspector = app.query_one(Inspector)
        assert inspector.display and inspector.answer is view.answer
        assert inspector.query_one("#rounds").cursor_row == view.items[6].round_index


async def test_markdown_view_toggles_for_finished_answers():
    app = make_app(trace=TRACE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        view = app.query(AnswerView).last()
        view.focus()
        await pilot.press("m")
        await pilot.pause(0.2)
        assert view.query_one(".answer-markdown").display
        assert not view.query_one(".answer-body").display
        await pilot.press("m")
        await pilot.pause(0.1)
        assert view.query_one(".answer-body").display


async def test_inspector_shows_alternatives_and_the_answer_takes_the_accepted_one():
    from specchat.engine.loop.events import event_from_json

    trace = TRACE.parent / "alternatives.jsonl"
    events = [event_from_json(line) for line in trace.read_text(encoding="utf-8").splitlines() if line.strip()]
    app = make_app(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        view = app.query(AnswerView).last()
        end = [e for e in events if isinstance(e, TurnEnd)][-1]
        assert view.rendered.plain == safe(end.text)
        gauges = str(app.query_one("#gauges").render())
        assert f"{end.totals.alternatives_accepted}/{end.totals.alternatives} taken" in gauges
        rounds = view.answer.rounds
        taken = next(i for i, r in enumerate(rounds) if any(a.accepted for a in r.alternatives))
        # The accepted alternative is shown as an accepted draft, in answer order.
        accepted_texts = [p.text for p in view.items if p.round_index == taken and p.kind == "accepted"]
        assert accepted_texts == [t.text for t in rounds[taken].accepted]
        view.focus()
        await pilot.press("f2")
        await pilot.pause(0.1)
        inspector = app.query_one(Inspector)
        for _ in range(taken):
            await pilot.press("down")
        await pilot.pause(0.1)
        r = rounds[taken]
        assert " or " in inspector.query_one("#rounds").get_row_at(taken)[2].plain
        tokens = inspector.query_one("#round-tokens")
        assert tokens.row_count == len(r.drafted) + len(r.alternatives) + (r.emitted is not None)
        alt_rows = [tokens.get_row_at(len(r.drafted) + j) for j in range(len(r.alternatives))]
        assert [row[0] for row in alt_rows] == [f"{a.position} alt" for a in r.alternatives]
        verdict_of = {row[2]: row[5].plain for row in alt_rows}
        assert [verdict_of[str(a.token_id)] for a in r.alternatives if a.accepted] == ["accepted"]
        assert f"{len(r.alternatives)} alternatives" in str(tokens.border_title)
        # The target's token stands after the accepted ones: its place in the answer.
        assert tokens.get_row_at(tokens.row_count - 1)[0] == str(r.n_accepted)


async def test_a_repaint_after_the_screen_is_gone_is_harmless():
    # The repaint timer can fire while the app closes (seen once in CI as NoMatches, whose
    # report then failed too: the app's own _flush had shadowed textual's print capture).
    from textual.app import App

    from specchat.tui.app import SpecChatApp

    assert SpecChatApp._flush is App._flush
    app = make_app(trace=TRACE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
    app._gauges_dirty = True
    app._paint_dirty()


async def test_inspector_under_k_auto_shows_the_drafts_left_unverified():
    from specchat.engine.loop.events import event_from_json

    trace = TRACE.parent / "auto.jsonl"
    events = [event_from_json(line) for line in trace.read_text(encoding="utf-8").splitlines() if line.strip()]
    rounds = [e for e in events if isinstance(e, Round)]
    cut = next(i for i, r in enumerate(rounds) if r.unverified and r.drafted)
    app = make_app(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        app.query(AnswerView).last().focus()
        await pilot.press("f2")
        await pilot.pause(0.1)
        inspector = app.query_one(Inspector)
        table = inspector.query_one("#rounds")
        # The k column: drafts verified, "+" those drafted and left unverified; not the cap (Round.k).
        assert [table.get_row_at(i)[1] for i in range(len(rounds))] == [
            f"{len(r.drafted)}+{r.unverified}" if r.unverified else str(len(r.drafted)) for r in rounds]
        for _ in range(cut):
            await pilot.press("down")
        await pilot.pause(0.1)
        title = str(inspector.query_one("#round-tokens").border_title)
        assert f"{rounds[cut].unverified} more drafted, not verified" in title
        gauges = str(app.query_one("#gauges").render())
        assert f"{len(rounds[-1].drafted)} (auto)" in gauges
