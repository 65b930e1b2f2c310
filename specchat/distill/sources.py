"""Where the prompts of a `specchat distill --data` shard come from, kind by kind.

    magpie       a first turn the target writes itself from the bare template (magpie.py)
    steered      the same, after a few words that steer it to math, code, translation...
    followup     a second (or later) turn the target writes after one of its earlier
                 exchanges; a fixed follow-up (followups.FOLLOW_UPS) where its own is dropped
    summary      summarise a document: one or two of the target's longer earlier answers,
                 or a module docstring the package ships (the only prose a wheel holds)
    document     answer an earlier question from one to three earlier answers given as documents
    translation  a sentence from an earlier answer into another language, or one of the
                 target's own translations back into English
    math, code   prompts.py's templates (the target writes more of both when steered)
    wide         prompts.py's wide templated set

The kinds that build on earlier answers wait until the store holds some. Each shard
draws its kinds and builds its prompts from its own seeded RNG and the exchanges
stored before it, so a resumed run builds what the first would have.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from specchat.distill import prompts as templated
from specchat.distill.followups import DOCUMENT_ASKS, FOLLOW_UPS, SUMMARY_ASKS, as_document
from specchat.distill.heldout import HeldOut, normalised
from specchat.distill.magpie import STEERS, Asked

WEIGHTS = {"magpie": 28, "steered": 16, "followup": 14, "summary": 10, "document": 10, "translation": 9,
           "math": 6, "code": 4, "wide": 3}
WRITTEN = ("magpie", "steered", "followup")  # kinds whose user turn the target writes
NEEDS_EARLIER = ("followup", "document", "translation")
MIN_EARLIER = 16  # exchanges stored before the kinds that build on them start

MORE_SUMMARY_ASKS = (
    "Summarize this in one paragraph.", "Write a TL;DR of the text below.",
    "List the three most important points of this text.", "Explain this text to a child in a few sentences.",
    "Sum up the text below in plain words.",
)
MORE_DOCUMENT_ASKS = ("Read the text below and then answer the question at the end.",
                      "Here are some notes. Answer my question from them.")
FRAMES = SUMMARY_ASKS + DOCUMENT_ASKS + MORE_SUMMARY_ASKS + MORE_DOCUMENT_ASKS
TRANSLATE_FORMS = (
    "Translate into {lang}: {s}", "Translate this sentence into {lang}:\n\n{s}",
    "Can you translate \"{s}\" into {lang}?", "{s}\n\nTranslate the sentence above into {lang}.",
    "Give me the {lang} version of this: {s}",
)
LANGUAGES = templated.LANGUAGES

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PLAIN = re.compile(r"^[A-Z][A-Za-z ,;'’-]+[.!?]$")


@dataclass
class Exchange:
    """An earlier record: its chat up to the user's turn, the target's answer."""
    kind: str
    messages: list[dict]
    answer: str


@dataclass
class Pool:
    """What a shard may build on: every exchange stored before it, and the
    normalised user turns seen so far (no prompt twice)."""
    exchanges: list[Exchange] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        self.seen.add(normalised(exchange.messages[-1]["content"]))

    def long_answers(self) -> list[Exchange]:
        return [e for e in self.exchanges if len(e.answer) >= 300] or self.exchanges


@lru_cache(maxsize=1)
def shipped_documents() -> tuple[str, ...]:
    """The longer module docstrings of the installed package, as plain paragraphs."""
    docs = []
    for path in sorted(Path(templated.__file__).resolve().parents[1].rglob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        if doc and len(doc) >= 400:
            paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
            docs.append("\n\n".join(p for p in paragraphs if p and not p.startswith(("    ", "`"))))
    return tuple(docs)


def plan(rng: random.Random, size: int, earlier: int) -> list[str]:
    """The kind of every row of a shard, given how many exchanges are stored."""
    kinds = [k for k in WEIGHTS if earlier >= MIN_EARLIER or k not in NEEDS_EARLIER]
    return rng.choices(kinds, [WEIGHTS[k] for k in kinds], k=size)


def asked(kind: str, rng: random.Random, pool: Pool) -> Asked:
    """What the target is asked to write for a row of a written kind."""
    if kind == "magpie":
        return Asked([])
    if kind == "steered":
        return Asked([], rng.choice(STEERS[rng.choice(tuple(STEERS))]))
    earlier = rng.choice(pool.exchanges)
    return Asked(earlier.messages + [{"role": "assistant", "content": earlier.answer.strip()}])


def written_chat(ask: Asked, text: str) -> list[dict]:
    return ask.messages + [{"role": "user", "content": text}]


def fallback(kind: str, rng: random.Random, ask: Asked) -> list[dict]:
    """A row whose written turn was dropped: a fixed follow-up, or a templated turn."""
    if kind == "followup":
        return written_chat(ask, rng.choice(FOLLOW_UPS))
    return [{"role": "user", "content": templated.make_prompts(1, rng.randrange(2**31), "wide")[0]}]


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(" ".join(text.split())) if _PLAIN.match(s) and 6 <= len(s.split()) <= 28]


def _summary(rng: random.Random, pool: Pool) -> str:
    shipped = shipped_documents()
    draw = rng.random()
    if shipped and (draw < 0.15 or not pool.exchanges):
        doc = rng.choice(shipped)
    elif draw < 0.4 and len(pool.exchanges) > 1:
        doc = "\n\n".join(as_document(e.answer) for e in rng.sample(pool.long_answers(), 2))
    else:
        doc = as_document(rng.choice(pool.long_answers()).answer)
    ask = rng.choice(SUMMARY_ASKS + MORE_SUMMARY_ASKS)
    return f"{doc}\n\nSummarize the text above in two sentences." if rng.random() < 0.15 else f"{ask}\n\n{doc}"


def _document(rng: random.Random, pool: Pool) -> str:
    chosen = rng.sample(pool.long_answers(), min(len(pool.long_answers()), rng.randint(1, 3)))
    question = rng.choice(chosen).messages[-1]["content"]
    if len(chosen) == 1:
        docs = as_document(chosen[0].answer)
    else:
        docs = "\n".join(f"Document {i}: {as_document(e.answer)}" for i, e in enumerate(chosen, 1))
    return f"{rng.choice(DOCUMENT_ASKS + MORE_DOCUMENT_ASKS)}\n\n{docs}\n\nQuestion: {question}"


def _translation(rng: random.Random, pool: Pool) -> str | None:
    earlier = rng.choice(pool.exchanges)
    asked_for = earlier.messages[-1]["content"]
    if rng.random() < 0.3 and asked_for.startswith("Translate into") and not asked_for.startswith(
            "Translate into English"):  # the target's own translation, back
        text = " ".join(earlier.answer.split())
        return f"Translate into English: {text}" if 3 <= len(text.split()) <= 40 else None
    sentences = _sentences(earlier.answer)
    if not sentences:
        return None
    return rng.choice(TRANSLATE_FORMS).format(lang=rng.choice(LANGUAGES), s=rng.choice(sentences))


def built(kind: str, rng: random.Random, pool: Pool) -> str | None:
    """A user turn of a kind the target does not write, or None (try again)."""
    if kind == "summary":
        return _summary(rng, pool)
    if kind == "document":
        return _document(rng, pool)
    if kind == "translation":
        return _translation(rng, pool)
    if kind == "math":
        return templated._math(rng)
    if kind == "code":
        return rng.choice(templated._CODE).format(c=rng.choice(templated._CODE_TASKS + templated._MORE_CODE_TASKS))
    return templated.make_prompts(1, rng.randrange(2**31), "wide")[0]


def fresh(chat: list[dict], pool: Pool, heldout: HeldOut) -> bool:
    """Whether a chat may join the data: its last turn not seen before, no turn near
    a held-out prompt."""
    return normalised(chat[-1]["content"]) not in pool.seen and not heldout.near_chat(chat)
