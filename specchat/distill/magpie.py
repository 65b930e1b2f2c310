"""User turns the target writes itself (Magpie's method, Xu et al. 2024).

An instruction-tuned model given its chat template up to the start of a user's turn
writes a user's message: the questions it was tuned on, in its own words, far more
varied than templates. Here the target does that for first turns (from the bare
template, or after a few words that steer it to a kind the bench measures: math,
code, translation...) and for second turns (after an earlier exchange, so it asks a
follow-up on its own answer). The turns are sampled through the engine as the chat
runs it (answerer.py: one turn at a time, the drafter drafting), at temperature 1
and top-p 0.95, each shard with its own seed, then filtered: a turn that did not end, is too short or too long, repeats
itself, holds template markup, does not read as a request, was seen before (by
normalised text) or is near a held-out prompt (heldout.py) is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from specchat.distill.heldout import HeldOut, normalised, words
from specchat.engine.loop.sampling import SamplingSettings

TEMPERATURE, TOP_P = 1.0, 0.95

# Starts of a user's message that steer the target to a kind (it writes the rest).
STEERS = {
    "math": ("Solve this word problem step by step:", "I need help with a math problem.", "Calculate",
             "A farmer", "A school has", "If I buy", "What is the probability", "Work out how many",
             "My recipe needs", "A car leaves"),
    "code": ("Write a Python function", "How do I", "Can you explain what this code does?", "In JavaScript,",
             "Write a SQL query", "What is the difference between a list and", "Fix the bug in my",
             "Write a bash command"),
    "translation": ("Translate", "How do you say", "What does the French", "Can you translate",
                    "Please translate this into Spanish:", "What is the German word for"),
    "writing": ("Write a short story", "Write a poem", "Write an email to", "Draft a message",
                "Rewrite this sentence", "Give me a catchy title for"),
    "questions": ("Explain", "Why do", "What is the difference between", "How does", "Compare",
                  "Give me a list of", "What are the benefits of", "Is it true that", "Tell me about"),
    "advice": ("Can you help me", "I'm planning", "What should I do if", "How can I", "I want to learn",
               "Suggest"),
}

_REQUEST_STARTS = {
    "what", "why", "how", "who", "when", "where", "which", "can", "could", "would", "will", "should", "is",
    "are", "do", "does", "did", "explain", "describe", "write", "tell", "give", "list", "create", "make",
    "help", "suggest", "translate", "summarize", "summarise", "compare", "calculate", "solve", "find",
    "show", "provide", "generate", "draft", "rewrite", "recommend", "plan", "design", "please", "imagine",
    "name", "define", "discuss", "analyze", "analyse", "convert", "fix", "implement", "outline",
}
_ASKING = re.compile(r"\?|\b(please|help me|can you|could you|i need|i want|i'm looking|i am looking|i'd like|"
                     r"i would like|i'm trying|i am trying|i'm planning|how to)\b", re.IGNORECASE)
_RUN_TOGETHER = re.compile(r"[a-z]\.[A-Za-z]")  # "Baby.Dawg.Lego": sentences without spaces
_MARKUP = re.compile(r"<\||\|>|^\s*(assistant|user|system)\s*[:\n]", re.IGNORECASE | re.MULTILINE)

MIN_WORDS, MAX_CHARS = 4, 1200


def user_turn_prefix(tokenizer, messages: list[dict]) -> str:
    """The chat template of `messages` up to where the next user turn's text starts."""
    marker = "\x00USER\x00"
    text = tokenizer.apply_chat_template(messages + [{"role": "user", "content": marker}], tokenize=False)
    return text[:text.index(marker)]


def acceptable(text: str) -> bool:
    """Whether a written turn reads as a user's request (the junk filter, before
    the duplicate and held-out checks)."""
    ws = words(text)
    if len(ws) < MIN_WORDS or len(text) > MAX_CHARS or _MARKUP.search(text):
        return False
    if len(ws) >= 12 and len(set(ws)) < 0.45 * len(ws):  # looping on itself
        return False
    if sum(len(w) > 20 for w in ws) > 1 or len(_RUN_TOGETHER.findall(text)) >= 3:  # run-together junk
        return False
    return ws[0] in _REQUEST_STARTS or bool(_ASKING.search(text))


@dataclass
class Asked:
    """A turn to write: after `messages` (empty for a first turn), starting `steer`."""
    messages: list[dict]
    steer: str = ""


@dataclass
class Written:
    text: str | None  # None: dropped by a filter
    tokens: int  # ids sampled for it, kept or not


def write_turns(answerer, asks: list[Asked], *, seed: int, max_tokens: int, seen: set[str], heldout: HeldOut,
                temperature: float = TEMPERATURE, top_p: float = TOP_P, sampled_k: int = 3) -> list[Written]:
    """Let the target write every asked turn (`answerer`: answerer.Answerer, one
    turn at a time, drawn in order from one generator seeded `seed`); a turn is kept
    when it reads as a request, is not in `seen` (normalised texts) nor written twice
    here, and is not near a held-out prompt."""
    tokenizer = answerer.tokenizer
    sampling = SamplingSettings(temperature=temperature, top_p=top_p)
    generator = torch.Generator().manual_seed(seed)
    out, here = [], set()
    for ask in asks:
        prefix = user_turn_prefix(tokenizer, ask.messages) + ask.steer
        ids = answerer.answer(tokenizer(prefix, add_special_tokens=False)["input_ids"], max_tokens, sampling,
                              generator, sampled_k)
        ended = bool(ids) and ids[-1] in answerer.end_ids
        body = tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=True)
        text = (ask.steer + body).strip() if len(words(body)) >= 2 else ""  # a steer alone is no turn
        key = normalised(text)
        keep = ended and acceptable(text) and key not in seen and key not in here and not heldout.near(text)
        here.add(key)
        out.append(Written(text if keep else None, len(ids)))
    return out
