"""The TUI's pure parts: records, transcript, stats, rendering, themes, commands."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from specchat.engine.loop.events import Round, TurnEnd, TurnStart, to_json
from specchat.tui import commands
from specchat.tui.persist import ConversationLog, TraceError, load_transcript, read_records
from specchat.tui.render import answer_text, pieces, safe
from specchat.tui.stats import compute
from specchat.tui.themes import (DEFAULT_THEME, FALLBACK_PROVENANCE, load_theme_file, load_themes,
                                 resolve_theme_arg)
from specchat.tui.transcript import Prompt, Transcript



def test_transcript_text_matches_turn_end(trace_events):
    t = Transcript()
    for e in trace_events:
        t.apply(e)
    ends = [e for e in trace_events if isinstance(e, TurnEnd)]
    assert [a.end for a in t.answers] == ends
    for a in t.answers:
        assert "".join(p.text for p in pieces(a, show_rejected=False)) == a.end.text


def test_rejected_pieces_sit_before_their_correction(trace_events):
    t = Transcript()
    for e in trace_events:
        t.apply(e)
    rounds = [r for a in t.answers for r in a.rounds if any(not d.accepted for d in r.drafted)]
    assert rounds, "the fixture trace must hold rejected drafts"
    shown = pieces(t.answers[-1], show_rejected=True)
    for i, p in enumerate(shown):
        if p.kind == "rejected":
            nxt = next(q for q in shown[i:] if q.kind != "rejected")
            assert nxt.kind == "correction" and nxt.round_index == p.round_index


def test_model_text_is_never_markup():
    from specchat.tui.render import Piece

    text = answer_text([Piece("[bold red]x[/bold red]", "target", 0, 0)], FALLBACK_PROVENANCE)
    assert text.plain == "[bold red]x[/bold red]"
    assert safe("a\x1b[2Jb\rc\n") == "a\u241b[2Jb\u240dc\n"


def test_a_streaming_answer_shows_the_same_text_and_colours_in_runs(trace_events):
    t = Transcript()
    for e in trace_events:
        t.apply(e)
    items = pieces(t.answers[-1], show_rejected=True)
    full = answer_text(items, FALLBACK_PROVENANCE)
    runs = answer_text(items, FALLBACK_PROVENANCE, streaming=True)
    assert runs.plain == full.plain
    assert len(runs.spans) < len(full.spans)  # one span per run of one kind

    def colour_at(text, i):
        return next(s.style.color for s in text.spans if s.start <= i < s.end)
    assert all(colour_at(runs, i) == colour_at(full, i) for i in range(len(full.plain)))


def test_stats_agree_with_engine_totals(trace_events):
    t = Transcript()
    for e in trace_events:
        t.apply(e)
    v = compute(t)
    last = [e for e in trace_events if isinstance(e, TurnEnd)][-1]
    assert v.turn.acceptance_rate == last.totals.acceptance_rate
    rounds = [e for e in trace_events if isinstance(e, Round)]
    assert v.session.rounds == len(rounds)
    assert v.session.accepted == sum(r.n_accepted for r in rounds)
    assert sum(v.histogram.values()) == len(rounds)
    assert v.histogram.get(0, 0) == sum(1 for r in rounds if r.n_accepted == 0)
    # The trace's first turn ran with speculation off: it is the baseline.
    first = [e for e in trace_events if isinstance(e, TurnEnd)][0]
    assert v.baseline is not None and v.baseline.answer_index == 0
    expected = (first.totals.elapsed_s / first.totals.tokens) / (last.totals.elapsed_s / last.totals.tokens)
    assert v.speedup == pytest.approx(expected)
    assert v.current_k == rounds[-1].k == 4  # a fixed k (the turn ended inside its last run)
    auto = Transcript()
    for e in trace_events:
        auto.apply(replace(e, k="auto") if isinstance(e, TurnStart) else e)
    assert compute(auto).current_k == len(rounds[-1].drafted) == 1  # under auto: drafts verified


def test_inspector_k_shows_drafts_verified_and_those_left_unverified(trace_events):
    from specchat.tui.widgets.inspector import k_cell

    r = next(e for e in trace_events if isinstance(e, Round) and len(e.drafted) >= 2)
    assert k_cell(replace(r, k=8), auto=True) == str(len(r.drafted))  # not the cap
    assert k_cell(replace(r, k=8, unverified=3), auto=True) == f"{len(r.drafted)}+3"
    assert k_cell(replace(r, k=4), auto=False) == "4"


def test_no_baseline_without_a_spec_off_turn(trace_events):
    t = Transcript()
    for e in trace_events:
        if isinstance(e, TurnStart) and e.drafter == "none":
            e = TurnStart(**{**e.__dict__, "drafter": "ngram", "k": "4"})
        t.apply(e)
    assert compute(t).baseline is None and compute(t).speedup is None


def test_log_round_trip_and_torn_last_line(tmp_path, trace_events):
    log = ConversationLog(tmp_path / "c.jsonl")
    log.append(Prompt("hi [b]"))
    for e in trace_events[:5]:
        log.append(e)
    log.close()
    with open(log.path, "a") as f:
        f.write('{"type": "round", "turn"')  # the process died mid-line
    records = list(read_records(log.path))
    assert records[0] == Prompt("hi [b]") and records[1:] == trace_events[:5]
    transcript, _ = load_transcript(log.path)
    assert transcript.answers[0].status == "interrupted"
    assert transcript.answers[0].user_text == trace_events[0].user_text  # TurnStart's text wins


def test_bad_trace_line_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"type": "nope"}\n' + to_json(TurnEnd(turn=0, finish_reason="eos", text="")) + "\n")
    with pytest.raises(TraceError, match="t.jsonl:1"):
        list(read_records(path))


def test_shipped_themes_load():
    load = load_themes()
    assert not load.failures
    assert {"specchat-dark", "specchat-light", "specchat-colorblind"} <= set(load.themes)
    cb = load.themes["specchat-colorblind"].variables
    assert cb["prov-accepted"] != cb["prov-rejected"]


def test_broken_theme_falls_back_with_a_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "colors": {"primary": "not-a-colour"}}))
    name, warning = resolve_theme_arg(str(bad), load_themes())
    assert name == DEFAULT_THEME and "bad.json" in warning and "primary" in warning
    (tmp_path / "worse.json").write_text("{ nope")
    with pytest.raises(Exception, match="not valid JSON"):
        load_theme_file(tmp_path / "worse.json")
    name, warning = resolve_theme_arg("no-such-theme", load_themes())
    assert name == DEFAULT_THEME and "unknown theme" in warning
    assert resolve_theme_arg("light", load_themes()) == ("specchat-light", None)


@pytest.mark.parametrize("text,expected", [
    ("hello", None), ("//k 3", None), ("/k 3", commands.Command("k", "3")),
    ("/alternatives auto", commands.Command("alt", "auto")),
    ("/spec off", commands.Command("spec", "off")), ("/temperature 0.7", commands.Command("temp", "0.7")),
    ("/penalty 1.1", commands.Command("penalty", "1.1")), ("/repetition 1", commands.Command("penalty", "1")),
])
def test_commands_parse(text, expected):
    assert commands.parse(text) == expected


@pytest.mark.parametrize("text", ["/k lots", "/alt -2", "/temp -1", "/spec maybe", "/nope", "/theme",
                                  "/penalty 0", "/penalty", "/penalty strong"])
def test_bad_commands_say_why(text):
    with pytest.raises(commands.CommandError):
        commands.parse(text)


def test_replay_of_a_file_without_events_is_an_error(tmp_path):
    from specchat.tui.app import run_replay
    from specchat.tui.persist import TraceError

    for name, content in [("empty.jsonl", ""), ("garbage.jsonl", "this is not json\n")]:
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(TraceError, match="no specchat events"):
            run_replay(path)
