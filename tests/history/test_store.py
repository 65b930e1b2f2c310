"""The history store on real files: import, search (FTS5 and the LIKE fallback),
databases it must refuse, and two processes writing at once."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from specchat.engine.loop.events import Totals, TurnEnd
from specchat.history import store as store_module
from specchat.history.opening import history_path, open_history
from specchat.history.rebuild import rebuild
from specchat.history.recorder import TurnRecorder
from specchat.history.store import HistoryError, HistoryStore
from specchat.tui.persist import load_transcript
from specchat.tui.transcript import Prompt

TRACES = Path(__file__).parents[1] / "tui" / "traces"
REPO = Path(__file__).parents[2]


def answer(store, cid, prompt, text, status="eos"):
    recorder = TurnRecorder(store, source="oneshot", conversation_id=cid)
    recorder.append(Prompt(prompt), TurnEnd(turn=1, finish_reason=status, text=text, totals=Totals(tokens=3)))
    return recorder.conversation_id


def test_old_conversations_are_imported_once_without_loss(tmp_path):
    folder = tmp_path / "conversations"
    folder.mkdir()
    shutil.copy(TRACES / "session.jsonl", folder / "20250101-000000.jsonl")
    torn = folder / "20250102-000000.jsonl"
    torn.write_text((TRACES / "session.jsonl").read_text() + '{"type": "round", "tur', encoding="utf-8")
    bad = folder / "20250103-000000.jsonl"
    bad.write_text('{"type": "prompt", "text": "hi"}\nnot json\n{"type": "prompt", "text": "x"}\n')
    store, report = open_history(tmp_path)
    assert report.imported == 2 and len(report.unreadable) == 1 and "20250103" in report.unreadable[0]
    expected, _ = load_transcript(folder / "20250101-000000.jsonl")
    conversations = store.conversations()
    assert len(conversations) == 2
    for c in conversations:
        turns = store.turns(c.id)
        assert [(t.prompt, t.answer) for t in turns] == [(a.user_text, a.text) for a in expected.answers]
        assert [t.trace_index for t in turns] == list(range(len(turns)))
        assert turns[0].figures["target"] == expected.answers[0].start.target
        again = rebuild(store, c.id).transcript  # from the trace: rounds and all
        assert [a.rounds for a in again.answers] == [a.rounds for a in expected.answers]
    store.close()
    store, report = open_history(tmp_path)  # opened again: nothing imported twice
    assert report.imported == 0 and len(store.conversations()) == 2
    assert bad.read_text().startswith('{"type": "prompt"')  # an unreadable file is left alone


@pytest.mark.parametrize("fts", [True, False])
def test_search_finds_words_in_prompts_and_answers(tmp_path, monkeypatch, fts):
    if not fts:
        monkeypatch.setattr(store_module, "fts5_available", lambda: False)
    elif not store_module.fts5_available():
        pytest.skip("this sqlite3 has no FTS5")
    store = HistoryStore.open(tmp_path / "h.db")
    assert store.fts is fts
    sky = answer(store, None, "Why is the sky blue?", "Rayleigh scattering of sunlight.")
    answer(store, sky, "And sunsets?", "Longer paths through the air.")
    tcp = answer(store, None, "Explain TCP", "A reliable byte stream over IP.")
    found = lambda words: [c.id for c in store.search(words)]  # noqa: E731
    assert found("rayleigh") == [sky] and found("sunsets") == [sky] and found("byte stream") == [tcp]
    assert found("Rayl") == [sky]  # a prefix, as the picker filters while you type
    assert found("sky tcp") == []  # every word must be in one message
    assert found("\"sky OR") == [] and found("AND") == [sky] and found("NEAR(") == []  # text, not syntax
    assert "ayleigh" in store.search("Rayleigh")[0].snippet
    store.close()


def test_a_damaged_a_foreign_and_a_newer_database_are_refused_and_left_as_they_are(tmp_path):
    path = history_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match="damaged.*move it away"):
        open_history(tmp_path)
    assert path.read_bytes() == b"this is not a database" * 100

    path.unlink()
    sqlite3.connect(path).execute("CREATE TABLE notes (x)").connection.close()
    with pytest.raises(HistoryError, match="not a specchat history database"):
        open_history(tmp_path)

    path.unlink()
    store, _ = open_history(tmp_path)
    answer(store, None, "kept", "yes")
    store.db.execute("PRAGMA user_version = 99")
    store.close()
    with pytest.raises(HistoryError, match="newer specchat"):
        open_history(tmp_path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT prompt FROM turns").fetchall() == [("kept",)]


def test_a_locked_database_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "BUSY_MS", 200)
    store = HistoryStore.open(tmp_path / "h.db")
    cid = store.new_conversation("chat")
    other = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(HistoryError, match="locked by another process"):
            store.begin_turn(cid, "hello")
    finally:
        other.execute("ROLLBACK")
    store.begin_turn(cid, "hello")  # free again: it writes
    assert [t.prompt for t in store.turns(cid)] == ["hello"]


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from specchat.engine.loop.events import Totals, TurnEnd
    from specchat.history.recorder import TurnRecorder
    from specchat.history.store import HistoryStore
    from specchat.tui.transcript import Prompt

    store = HistoryStore.open(Path(sys.argv[1]))
    name, shared = sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()  # both start together
    for i in range(40):
        for cid in (shared, None):  # a turn of the shared conversation, and a conversation of its own
            r = TurnRecorder(store, source="oneshot", conversation_id=cid)
            r.append(Prompt(f"{name} {i}"), TurnEnd(turn=1, finish_reason="eos", text=f"answer {name} {i}",
                                                    totals=Totals(tokens=2)))
""")


def test_two_processes_writing_at_once_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore.open(path)
    shared = store.new_conversation("oneshot")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(shared)], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    for w in writers:
        assert w.stdout.readline().strip() == "ready", w.stderr.read()
    for w in writers:
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in writers:
        assert w.wait(120) == 0, w.stderr.read()
    turns = store.turns(shared)
    assert [t.seq for t in turns] == list(range(1, 81))
    assert sorted(t.prompt for t in turns) == sorted(f"{n} {i}" for n in "ab" for i in range(40))
    assert all(t.status == "complete" and t.answer == "answer " + t.prompt for t in turns)
    own = [c for c in store.conversations(limit=1000) if c.id != shared]
    assert len(own) == 80 and all(c.turns == 1 for c in own)
    assert len(store.search("answer")) == 20  # the default limit
