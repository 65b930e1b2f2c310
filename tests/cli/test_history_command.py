"""`specchat history` and the one-shot side of the history (logging, -c, --no-log),
through the real CLI in-process on the shared embedded model."""

from __future__ import annotations

import json

import pytest

from specchat.engine.loop.events import TurnStart, event_from_json
from specchat.history.opening import history_path, open_history

RUN = ("run", "--drafter", "ngram", "--max-new-tokens", "8")


def stored():
    store, _ = open_history()
    try:
        return [(c.id, [(t.prompt, t.answer, t.status) for t in store.turns(c.id)]) for c in store.conversations(100)]
    finally:
        store.close()


@pytest.mark.slow
def test_one_shot_answers_are_logged_continued_listed_shown_exported_and_deleted(cli, shared_model, tmp_path,
                                                                                config_file):
    first = cli(*RUN, "--trace", str(tmp_path / "1.jsonl"), "Name a colour.")
    assert first.exit_code == 0, first.stderr
    [(cid, turns)] = stored()
    assert turns[0][:2] == ("Name a colour.", first.stdout) and turns[0][2] in ("complete", "length")
    # -c answers as the next turn: the model read the first exchange (a longer prompt).
    second = cli(*RUN, "--trace", str(tmp_path / "2.jsonl"), "-c", "Another one.")
    assert second.exit_code == 0, second.stderr
    [(same, turns)] = stored()
    assert same == cid and [t[:2] for t in turns] == [("Name a colour.", first.stdout), ("Another one.", second.stdout)]
    store, _ = open_history()
    assert [t.trace for t in store.turns(cid)] == [str(tmp_path / "1.jsonl"), str(tmp_path / "2.jsonl")]
    store.close()
    starts = [event_from_json((tmp_path / f"{n}.jsonl").read_text().splitlines()[0]) for n in (1, 2)]
    assert all(isinstance(s, TurnStart) for s in starts)
    assert starts[1].prompt_tokens > starts[0].prompt_tokens + len(first.stdout.split())

    assert cli(*RUN, "--no-log", "Not kept.").exit_code == 0
    config_file("log = false\n")
    assert cli(*RUN, "Not kept either.").exit_code == 0
    assert len(stored()) == 1

    listing = cli("history")
    assert listing.exit_code == 0 and "Name a colour." in listing.stdout and f"{cid:>5}" in listing.stdout
    found = cli("history", "-q", "anoth")
    assert found.exit_code == 0 and "Name a colour." in found.stdout and "[Anoth" in found.stdout
    nothing = cli("history", "-q", "zebra")
    assert nothing.exit_code == 0 and nothing.stdout == "" and "no conversation matches" in nothing.stderr
    rows = json.loads(cli("history", "--json").stdout)
    assert [(r["id"], r["turns"], r["source"]) for r in rows] == [(cid, 2, "oneshot")]

    shown = cli("history", "show", str(cid))
    assert shown.exit_code == 0 and "## Turn 2" in shown.stdout and second.stdout in shown.stdout
    assert "drafter ngram" in shown.stdout
    data = json.loads(cli("history", "show", "last", "--json").stdout)
    assert [m["answer"] for m in data["messages"]] == [first.stdout, second.stdout]
    out = tmp_path / "chat.md"
    exported = cli("history", "export", str(cid), "-o", str(out))
    assert exported.exit_code == 0 and exported.stdout.strip() == str(out) and out.read_text() == shown.stdout

    refused = cli("history", "delete", str(cid))  # stdin is no terminal: it asks for --yes
    assert refused.exit_code == 2 and "--yes" in refused.stderr and len(stored()) == 1
    assert cli("history", "delete", str(cid), "--yes").exit_code == 0
    assert stored() == []
    gone = cli("history", "show", str(cid))
    assert gone.exit_code == 1 and gone.stderr.strip() == f"specchat: error: no conversation {cid} (see `specchat history`)"


def test_bad_ids_and_options_are_one_line_errors_before_any_model_loads(cli):
    missing = cli("run", "-c", "99", "Hello")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "specchat: error: no conversation 99 to continue (see `specchat history`)"
    resume = cli("run", "--resume", "Hello")
    assert resume.exit_code == 2 and "--resume opens the chat screen" in resume.stderr
    bad = cli("history", "show", "seven")
    assert bad.exit_code == 2 and "not a conversation id" in bad.stderr
    empty = cli("history", "show", "last")
    assert empty.exit_code == 1 and "no conversations stored yet" in empty.stderr


@pytest.mark.slow
def test_a_damaged_history_is_an_error_for_history_and_a_warning_for_a_one_shot(cli, shared_model):
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage" * 1000)
    listing = cli("history")
    assert listing.exit_code == 1 and len(listing.stderr.strip().splitlines()) == 1
    assert "damaged" in listing.stderr and "move it away" in listing.stderr
    answered = cli(*RUN, "Say hi.")
    assert answered.exit_code == 0 and answered.stdout
    assert "warning: this answer is not logged" in answered.stderr
    assert cli(*RUN, "-c", "Say hi.").exit_code == 1  # the conversation to continue is in it
    assert path.read_bytes() == b"garbage" * 1000
