"""Keeping held-out prompts out of the distillation data.

A drafter measured on prompts it was trained on looks better than it is, so every
prompt the distillation makes is checked against the held-out prompt files
(docs/heldout-prompts.jsonl, docs/heldout-2-prompts.jsonl, docs/unfamiliar-prompts.jsonl
in a source checkout) and dropped when it is near one: the same text once normalised
(lower case, words only), or the same run of `RUN` words inside one sentence.
Runs do not cross sentence ends, so a shared instruction of a few words followed by
a different passage ("Summarize the following text in two sentences." and then
another text) is not a match, while a shared sentence of eight words or more is.
The fixed instructions the distillation frames a passage with (`frames`: "Give a
one-sentence summary of this text.", which the first held-out set shares) are not
content and are left out of the comparison; the held-out sets' own passages,
questions and sentences to translate are all in it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RUN = 8  # words in a row that make two prompts near-duplicates

_WORD = re.compile(r"[a-z0-9À-ɏ]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"[.!?:;\n]+")

# Where the held-out sets live in a source checkout; a wheel carries none of them.
_DOCS = Path(__file__).resolve().parents[2] / "docs"
HELDOUT_FILES = ("heldout-prompts.jsonl", "heldout-2-prompts.jsonl", "unfamiliar-prompts.jsonl")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalised(text: str) -> str:
    """The text as its words only: the key two prompts are duplicates by."""
    return " ".join(words(text))


def runs(text: str, length: int = RUN) -> set[tuple[str, ...]]:
    """Every run of `length` words inside one sentence of text."""
    found = set()
    for sentence in _SENTENCE_END.split(text):
        ws = words(sentence)
        found.update(tuple(ws[i:i + length]) for i in range(len(ws) - length + 1))
    return found


def turns_of(path: Path) -> list[str]:
    """Every user turn of a bench prompt file (one JSON object a line)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            out += [item["prompt"]] if "prompt" in item else list(item["turns"])
    return out


def default_files() -> list[Path]:
    return [_DOCS / name for name in HELDOUT_FILES if (_DOCS / name).exists()]


class HeldOut:
    """The held-out turns, asked whether a text is near any of them."""

    def __init__(self, turns: list[str], frames: tuple[str, ...] = ()) -> None:
        self.texts = {normalised(t) for t in turns}
        self.runs = set().union(set(), *(runs(t) for t in turns)) - set().union(set(), *(runs(f) for f in frames))

    @classmethod
    def from_files(cls, paths: list[Path], frames: tuple[str, ...] = ()) -> "HeldOut":
        return cls([t for p in paths for t in turns_of(p)], frames)

    def near(self, text: str) -> bool:
        key = normalised(text)
        return key in self.texts or any(t and t in key for t in self.texts if len(t) > 40) \
            or not self.runs.isdisjoint(runs(text))

    def near_chat(self, messages: list[dict]) -> bool:
        return any(self.near(m["content"]) for m in messages if m["role"] == "user")
