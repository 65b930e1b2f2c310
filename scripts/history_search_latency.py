"""How long a history search takes over 10,000 stored messages (issue 39's goal: 100 ms).

    .venv/bin/python scripts/history_search_latency.py [--messages 10000] [--repeat 50]

Builds a throwaway store (a temporary directory, never the user's) of conversations
of 5 turns, each turn two messages (the question and the answer, ~60 words drawn
from a 5,000-word vocabulary, so words are spread as in text), through the same
TurnRecorder the chat and one-shot mode write with. Then times `HistoryStore.search`
(what `specchat history -q` and the picker call) for one-word, two-word and prefix
queries, a word in no message and one in every answer; prints the median and the slowest per kind,
for FTS5 and for the LIKE fallback.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from specchat.engine.loop.events import Totals, TurnEnd
from specchat.history import store as store_module
from specchat.history.recorder import TurnRecorder
from specchat.history.store import HistoryStore
from specchat.tui.transcript import Prompt


def build(path: Path, messages: int, words: list[str], rng: random.Random) -> HistoryStore:
    store = HistoryStore.open(path)
    with store.transaction():
        for _ in range(messages // 10):
            recorder = TurnRecorder(store, source="oneshot")
            for _turn in range(5):
                question = " ".join(rng.choices(words, k=12)) + "?"
                answer = "the " + " ".join(rng.choices(words, k=60)) + "."  # "the": in every answer
                recorder.append(Prompt(question), TurnEnd(turn=1, finish_reason="eos", text=answer,
                                                          totals=Totals(tokens=60)))
    return store


def timed(store: HistoryStore, query: str) -> float:
    t0 = time.perf_counter()
    store.search(query)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(5000)]
    for fts in (True, False):
        if fts and not store_module.fts5_available():
            print("FTS5: not in this sqlite3")
            continue
        store_module.fts5_available = (lambda: True) if fts else (lambda: False)
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            store = build(Path(folder) / "history.db", args.messages, words, rng)
            built = time.perf_counter() - t0
            kinds = {
                "one word": lambda: rng.choice(words),
                "two words": lambda: f"{rng.choice(words)} {rng.choice(words)}",
                "prefix (3 letters)": lambda: rng.choice(words)[:3],
                "in no message": lambda: "zzzzqqqq",
                "in every answer": lambda: "the",
            }
            print(f"{'FTS5' if fts else 'LIKE'}: {args.messages} messages stored in {built:.1f} s "
                  f"({sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6:.1f} MB with its WAL)")
            for name, make in kinds.items():
                times = [timed(store, make()) for _ in range(args.repeat)]
                print(f"  {name:20} median {1000 * statistics.median(times):6.2f} ms   "
                      f"slowest {1000 * max(times):6.2f} ms")
            store.close()


if __name__ == "__main__":
    main()
