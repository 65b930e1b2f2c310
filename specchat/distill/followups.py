"""Prompts built on the target's earlier answers: second turns, summaries, documents.

Templated prompts alone gave the drafter three made-up passages to summarise, a few
hundred topics and one turn of conversation, and it learned those: held out, it agreed
with the target on 0.76 of summary tokens from the templates but 0.56 on the bench's
summaries, 0.52 on templated questions and 0.33 on the bench's. Users bring their own
documents and second questions. So part of every batch after the first is built from
answers the target already gave: a second turn after an earlier exchange, a summary
of an earlier answer, or a question answered from earlier answers given as documents.
Each depends only on earlier answers and a seeded RNG, so a resumed run rebuilds the
same ones.

Measured, it did not pay: 2,432 answers with `--prompt-set wide --derived-share 0.375`
gave a drafter no better on the bench than the shipped one (all 24 prompts, k = 4:
acceptance 0.263 against 0.273, 2.03 against 2.06 tokens a round; teacher-forced on
the bench's first turns, questions 0.29 against 0.33 agreement), so the default
share is 0. What limits the drafter is not the topics it saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

FOLLOW_UPS = (
    "Can you make that shorter?", "Explain the second point in more detail.", "Give me an example.",
    "Now explain it to a child.", "Turn your answer into a bullet list.",
    "What is the most important point, in one sentence?", "Can you add two more ideas?",
    "Rewrite that in a more formal tone.", "Rewrite it as a short poem.", "Why is that true?",
    "Summarize your answer in one sentence.", "Translate the first sentence of your answer into French.",
    "Thanks! What should I do next?", "Can you give me a step-by-step version?",
    "What are common mistakes to avoid here?", "Make it more fun to read.", "Are there any exceptions?",
    "I did not understand the first part. Can you say it differently?",
)
SUMMARY_ASKS = (
    "Summarize the following text in two sentences.", "Summarize the following text in three sentences.",
    "Summarize this as a bullet list.", "Give a one-sentence summary of this text.",
    "What are the main points of this text?", "Summarize the main ideas of this article.",
    "Write a short summary of this for a busy reader.", "What is this text about? Answer briefly.",
)
DOCUMENT_ASKS = (
    "Answer the question using only the documents below.", "Use the documents below to answer the question.",
    "Read the documents and answer the question. Use only what they say.",
)

_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


@dataclass(frozen=True)
class Exchange:
    """An earlier first-turn question and the target's answer to it."""
    question: str
    answer: str


def as_document(answer: str) -> str:
    """The answer without a last sentence cut off by the token limit."""
    text = answer.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text + " ")]
    if text[-1:] in ".!?" or not ends or ends[-1] < len(text) // 2:
        return text
    return text[:ends[-1]].strip()


def derived_messages(rng: random.Random, earlier: list[Exchange]) -> list[dict]:
    """A chat (role/content messages ending with the user's turn) built on `earlier`."""
    kind = rng.randrange(3)
    # Short answers (a time, a number) make poor documents.
    long = [e for e in earlier if len(e.answer) >= 200] or earlier
    if kind == 0:
        first = rng.choice(earlier)
        return [{"role": "user", "content": first.question},
                {"role": "assistant", "content": first.answer.strip()},
                {"role": "user", "content": rng.choice(FOLLOW_UPS)}]
    if kind == 1:
        text = as_document(rng.choice(long).answer)
        return [{"role": "user", "content": f"{rng.choice(SUMMARY_ASKS)}\n\n{text}"}]
    chosen = rng.sample(long, min(len(long), rng.randint(1, 3)))
    asked = rng.choice(chosen).question
    if len(chosen) == 1:
        docs = as_document(chosen[0].answer)
    else:
        docs = "\n".join(f"Document {i}: {as_document(e.answer)}" for i, e in enumerate(chosen, 1))
    return [{"role": "user", "content": f"{rng.choice(DOCUMENT_ASKS)}\n\n{docs}\n\nQuestion: {asked}"}]


def derived_count(batch_index: int, batch_len: int, share: float) -> int:
    """How many of a batch's prompts are built on earlier answers (none in the first
    batch, which has no earlier answers)."""
    return 0 if batch_index == 0 else round(batch_len * share)
