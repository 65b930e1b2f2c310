"""One-shot answers in the history, from real `specchat run` processes: killed with
SIGKILL mid-answer, and two continuing one conversation at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from specchat.history.opening import history_path, open_history
from specchat.history.recorder import TurnRecorder
from specchat.history.store import HistoryError, HistoryStore
from specchat.engine.loop.events import Totals, TurnEnd
from specchat.tui.transcript import Prompt

from ..cli.conftest import KEEP, REPO, specchat

pytestmark = pytest.mark.slow
FAST = ("--drafter", "ngram", "--quant", "fp16")


def _spawn(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECCHAT_") or k in KEEP}
    return subprocess.Popen([sys.executable, "-m", "specchat", "run", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _partial(path) -> str:
    if not path.exists():
        return ""
    try:
        store = HistoryStore.open(path)
    except HistoryError:  # being created by the child this instant
        return ""
    try:
        latest = store.latest()
        turns = store.turns(latest.id) if latest else []
        return turns[-1].answer if turns else ""
    finally:
        store.close()


def test_kill_9_mid_answer_leaves_the_partial_answer_marked_interrupted():
    path = history_path()
    child = _spawn(*FAST, "--max-new-tokens", "3000", "Tell me a very long story about a lighthouse keeper.")
    try:
        deadline = time.monotonic() + 300
        while len(_partial(path)) < 60:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no partial answer stored"
            time.sleep(0.2)
        seen = _partial(path)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    store, _ = open_history()
    turn = store.turns(store.latest().id)[-1]
    assert turn.status == "interrupted" and turn.answer.startswith(seen)
    assert turn.prompt == "Tell me a very long story about a lighthouse keeper."
    shown = specchat("history", "show", "last")
    assert shown.returncode == 0 and "interrupted" in shown.stdout.decode() and seen in shown.stdout.decode()


def test_two_one_shot_processes_continuing_one_conversation_at_once():
    store, _ = open_history()
    recorder = TurnRecorder(store, source="oneshot")
    recorder.append(Prompt("Name a fruit."), TurnEnd(turn=1, finish_reason="eos", text="An apple.",
                                                      totals=Totals(tokens=3)))
    cid = recorder.conversation_id
    children = [_spawn(*FAST, "--max-new-tokens", "8", "-c", str(cid), question)
                for question in ("Name another.", "And a vegetable?")]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()
    turns = store.turns(cid)
    assert [t.seq for t in turns] == [1, 2, 3]
    assert sorted(t.prompt for t in turns[1:]) == ["And a vegetable?", "Name another."]
    assert all(t.status in ("complete", "length") and t.answer for t in turns)
    assert all(t.figures["drafter"] == "ngram" and t.figures["tokens"] > 0 for t in turns[1:])
